//! Silver over the real landing data and the messy fixtures. Expected figures on the real data
//! were derived independently (Python over the raw files, exact decimals) and match ABOUT.md.

use std::collections::BTreeMap;

use cloudlake::report::RunReport;
use cloudlake::silver::{SilverMetrics, SilverSettings, rules::Action};

use crate::{messy_landing, real_landing, real_landing_copy, run, run_with, sql_csv, sql_i64, sql_text};

fn table<'a>(r: &'a RunReport, name: &str) -> &'a SilverMetrics {
    r.silver.iter().find(|m| m.table == name).unwrap()
}

fn violations(m: &SilverMetrics, rule: &str) -> u64 {
    m.rules.iter().find(|o| o.rule == rule).unwrap_or_else(|| panic!("no rule {rule}")).violations
}

#[tokio::test]
async fn real_data_rules_quarantine_and_conservation() {
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    let r = run(&real_landing(), p).await.unwrap();

    // Conservation, per source: read = silver rows + quarantined (bronze + silver) + duplicates.
    for b in &r.bronze {
        let s = table(&r, &b.source);
        assert!(s.conserved(), "{s:?}");
        assert_eq!(
            b.read,
            s.rows + b.quarantined + s.quarantined + b.duplicates + s.superseded,
            "{}",
            b.source
        );
    }

    let ev = table(&r, "usage_events");
    assert_eq!((ev.bronze_rows, ev.rows, ev.quarantined), (43_200, 42_989, 211));
    assert_eq!(violations(ev, "usage_events.cost_not_negative"), 211);
    assert_eq!(violations(ev, "usage_events.after_resource_created"), 7_335);
    assert_eq!(violations(ev, "usage_events.org_exists"), 0);
    assert_eq!(violations(ev, "usage_events.resource_exists"), 0);
    assert_eq!(ev.imputed, vec![("unit_imputed".to_string(), 2_033)]);
    assert_eq!(violations(table(&r, "users"), "users.last_login_after_created"), 232);
    assert_eq!(violations(table(&r, "customers_orgs"), "customers_orgs.plan_matches_enterprise"), 25);
    assert_eq!(violations(table(&r, "customers_orgs"), "customers_orgs.nps_in_range"), 1);
    let bill = table(&r, "billing_monthly");
    assert_eq!(violations(bill, "billing_monthly.usd_rate_is_one"), 160);
    assert_eq!(violations(bill, "billing_monthly.subtotal_not_negative"), 13);
    assert_eq!(bill.imputed, vec![("credits_imputed".to_string(), 137)]);

    // Quarantine rows keep the record, rule, reason, file, line and run.
    assert_eq!(
        sql_csv(p, "SELECT stage, rule_id, count(*) n, count(DISTINCT source_file) files, min(source_line) > 0 lines FROM quarantine_usage_events GROUP BY 1, 2").await,
        "stage,rule_id,n,files,lines\nsilver,usage_events.cost_not_negative,211,100,true\n"
    );
    assert_eq!(sql_i64(p, "SELECT count(*) FROM quarantine_usage_events WHERE record LIKE '{\"event_id\":\"evt_%' AND reason LIKE 'cost_usd_increment below -0.01%' AND run_id LIKE '2%Z-%'").await, 211);

    // Exact money: valid event costs and tokens, checked independently.
    assert_eq!(
        sql_i64(p, "SELECT CAST(sum(cost_usd) * 10000 AS BIGINT) FROM silver_usage_events").await,
        1_483_515_759
    );
    assert_eq!(sql_i64(p, "SELECT sum(genai_tokens) FROM silver_usage_events").await, 2_545_481);
    // Schema versions harmonised: v1 rows carry neither carbon_kg nor genai_tokens.
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_usage_events WHERE schema_version = 1 AND (carbon_kg IS NOT NULL OR genai_tokens IS NOT NULL)").await, 0);
    // Every event is enriched with its org and resource.
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_usage_events WHERE org_name IS NULL OR plan_tier IS NULL OR resource_service IS NULL").await, 0);
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM silver_usage_events WHERE unit IS NULL AND value IS NOT NULL").await,
        0
    );

    // FX: a USD invoice converts at exactly 1.0; revenue = subtotal - credits + taxes on every row.
    assert_eq!(
        sql_i64(
            p,
            "SELECT count(*) FROM silver_billing_monthly WHERE currency = 'USD' AND fx_rate_to_usd <> 1"
        )
        .await,
        0
    );
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_billing_monthly WHERE revenue_usd <> subtotal_usd - credits_usd + taxes_usd").await, 0);
    // Each USD amount rounds half away from zero to 6 decimals (Python: ROUND_HALF_UP gives the same).
    assert_eq!(
        sql_i64(p, "SELECT CAST(sum(revenue_usd) * 1000000 AS BIGINT) FROM silver_billing_monthly").await,
        164_293_062_232
    );
    // CSAT outside 1..5 is nulled but kept raw; NPS 101 nulled on the org.
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM silver_support_tickets WHERE csat IS NULL AND csat_raw IS NOT NULL")
            .await,
        40
    );
    assert_eq!(
        sql_i64(
            p,
            "SELECT count(*) FROM silver_customers_orgs WHERE nps_score_raw = 101 AND nps_score IS NULL"
        )
        .await,
        1
    );
    // SCD2 with one version per org so far.
    assert_eq!(
        sql_i64(
            p,
            "SELECT count(*) FROM silver_customers_orgs WHERE is_current AND valid_to IS NULL AND version = 1"
        )
        .await,
        80
    );

    // Daily features: one row per (org, date, service) with events, costs reconciled.
    assert_eq!(r.daily.rows, 11_050);
    assert_eq!(
        sql_i64(p, "SELECT CAST(sum(cost_usd) * 10000 AS BIGINT) FROM silver_usage_daily").await,
        1_483_515_759
    );
    assert_eq!(sql_i64(p, "SELECT sum(events) FROM silver_usage_daily").await, 42_989);
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM silver_usage_daily WHERE is_anomaly <> (methods_flagged >= 2)")
            .await,
        0
    );
    assert!(r.daily.anomalies > 0 && r.daily.anomalies < r.daily.rows / 10, "{:?}", r.daily);
    // The baseline is the trailing 28 days *before* the scored day: recompute it in SQL.
    assert_eq!(
        sql_i64(
            p,
            "SELECT count(*) FROM silver_usage_daily d
             JOIN (SELECT a.org_id, a.service, a.usage_date, avg(CAST(b.cost_usd AS DOUBLE)) m, count(*) c
                   FROM silver_usage_daily a JOIN silver_usage_daily b
                     ON a.org_id = b.org_id AND a.service = b.service
                    AND b.usage_date < a.usage_date AND b.usage_date >= a.usage_date - INTERVAL '28 days'
                   GROUP BY 1, 2, 3) x
               ON d.org_id = x.org_id AND d.service = x.service AND d.usage_date = x.usage_date
             WHERE d.baseline_days = x.c AND d.baseline_days >= 7
               AND abs(CAST(d.baseline_cost_usd AS DOUBLE) - x.m) > 0.000001"
        )
        .await,
        0
    );
    assert!(sql_i64(p, "SELECT count(*) FROM silver_usage_daily WHERE baseline_days >= 7").await > 5_000);
}

#[tokio::test]
async fn aliases_schema_versions_and_rules_on_messy_feeds() {
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    let r = run(&messy_landing(), p).await.unwrap();
    let ev = table(&r, "usage_events");
    // e7 (bad timestamp), e11 (schema v3), e12 (cost -5), e15 (unknown org), e16 (value 1e15)
    // are quarantined; the run goes on.
    assert_eq!((ev.bronze_rows, ev.rows, ev.quarantined, ev.superseded), (14, 9, 5, 0));
    assert_eq!(
        sql_csv(p, "SELECT rule_id, source_line FROM quarantine_usage_events WHERE stage = 'silver' ORDER BY source_file, source_line").await,
        "rule_id,source_line\n\
         usage_events.timestamp_valid,10\n\
         usage_events.schema_version_known,2\n\
         usage_events.cost_not_negative,3\n\
         usage_events.org_exists,6\n\
         usage_events.value_in_range,7\n"
    );
    // The unknown version's new field is in the quarantined record, not lost.
    assert_eq!(sql_i64(p, "SELECT count(*) FROM quarantine_usage_events WHERE rule_id = 'usage_events.schema_version_known' AND record LIKE '%water_l%'").await, 1);
    // Aliases and casing conformed; a unit imputed from the metric; unknown region kept, flagged.
    assert_eq!(
        sql_csv(p, "SELECT event_id, org_id, service, region, metric, unit, unit_imputed, org_name, dq_flags FROM silver_usage_events WHERE event_id IN ('e9', 'e10', 'e13', 'e14') ORDER BY event_id").await,
        "event_id,org_id,service,region,metric,unit,unit_imputed,org_name,dq_flags\n\
         e10,org_a,genai,us-east,cpu_hours,hours,true,\"Acme, Inc.\",\n\
         e13,org_a,compute,mars-north,requests,count,false,\"Acme, Inc.\",usage_events.region_known\n\
         e14,org_a,compute,us-east,requests,count,false,\"Acme, Inc.\",\n\
         e9,org_a,genai,us-east,requests,count,false,\"Acme, Inc.\",\n"
    );
    assert_eq!(
        sql_csv(p, "SELECT service, region FROM silver_resources").await,
        "service,region\ncompute,us-east\n"
    );
    assert_eq!(sql_csv(p, "SELECT severity FROM silver_support_tickets").await, "severity\ncritical\n");
    assert_eq!(
        sql_csv(p, "SELECT currency, fx_rate_reported, fx_rate_to_usd, revenue_usd, dq_flags FROM silver_billing_monthly").await,
        "currency,fx_rate_reported,fx_rate_to_usd,revenue_usd,dq_flags\nUSD,0.9768400000,1.0000000000,121.120000,billing_monthly.usd_rate_is_one\n"
    );
    assert_eq!(
        sql_csv(p, "SELECT hq_region, plan_tier FROM silver_customers_orgs WHERE org_id = 'org_a'").await,
        "hq_region,plan_tier\nus-east,pro\n"
    );
}

#[tokio::test]
async fn a_changed_plan_tier_is_history_and_events_join_the_version_of_their_time() {
    let (landing, original) = real_landing_copy("customers_orgs");
    let header = original.lines().next().unwrap();
    let row =
        original.lines().find(|l| l.starts_with("org_pbhsahxt,")).unwrap().replace(",standard,", ",pro,");
    std::fs::create_dir_all(landing.path().join("customers_orgs")).unwrap();
    std::fs::write(landing.path().join("customers_orgs/2025-07-15.csv"), format!("{header}\n{row}\n"))
        .unwrap();
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    run(landing.path(), p).await.unwrap();
    assert_eq!(
        sql_csv(p, "SELECT version, plan_tier, valid_from, valid_to, is_current FROM silver_customers_orgs WHERE org_id = 'org_pbhsahxt' ORDER BY version").await,
        "version,plan_tier,valid_from,valid_to,is_current\n\
         1,standard,1970-01-01T00:00:00Z,2025-07-15T00:00:00Z,false\n\
         2,pro,2025-07-15T00:00:00Z,,true\n"
    );
    let before = sql_i64(p, "SELECT count(*) FROM silver_usage_events WHERE org_id = 'org_pbhsahxt' AND event_ts < TIMESTAMP '2025-07-15T00:00:00Z'").await;
    let after = sql_i64(p, "SELECT count(*) FROM silver_usage_events WHERE org_id = 'org_pbhsahxt' AND event_ts >= TIMESTAMP '2025-07-15T00:00:00Z'").await;
    assert!(before > 0 && after > 0);
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_usage_events WHERE org_id = 'org_pbhsahxt' AND event_ts < TIMESTAMP '2025-07-15T00:00:00Z' AND plan_tier = 'standard'").await, before);
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_usage_events WHERE org_id = 'org_pbhsahxt' AND event_ts >= TIMESTAMP '2025-07-15T00:00:00Z' AND plan_tier = 'pro'").await, after);
    // No event is duplicated by the SCD2 join.
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_usage_events").await, 42_989);

    // A backdated delivery arriving later slots in by validity date; ranges never overlap.
    let row =
        original.lines().find(|l| l.starts_with("org_pbhsahxt,")).unwrap().replace(",standard,", ",free,");
    std::fs::write(landing.path().join("customers_orgs/2025-07-01.csv"), format!("{header}\n{row}\n"))
        .unwrap();
    let r = run(landing.path(), p).await.unwrap();
    assert!(r.silver.iter().all(|m| m.conserved()));
    assert_eq!(
        sql_csv(p, "SELECT version, plan_tier, valid_from, valid_to, is_current FROM silver_customers_orgs WHERE org_id = 'org_pbhsahxt' ORDER BY version").await,
        "version,plan_tier,valid_from,valid_to,is_current\n\
         1,standard,1970-01-01T00:00:00Z,2025-07-01T00:00:00Z,false\n\
         2,free,2025-07-01T00:00:00Z,2025-07-15T00:00:00Z,false\n\
         3,pro,2025-07-15T00:00:00Z,,true\n"
    );
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_usage_events").await, 42_989);
    assert_eq!(sql_i64(p, "SELECT count(DISTINCT event_id) FROM silver_usage_events").await, 42_989);
}

#[tokio::test]
async fn a_redelivered_master_keeps_its_latest_version_by_run_file_and_line() {
    let (landing, original) = real_landing_copy("resources");
    let header = original.lines().next().unwrap();
    let rows: Vec<&str> = original.lines().skip(1).filter(|l| l.contains(",running,")).take(2).collect();
    let id = |row: &str| row.split(',').next().unwrap().to_string();
    let (a, b) = (id(rows[0]), id(rows[1]));
    // One later file: `a` stopped; `b` twice, the later line (terminated, upper-cased id) wins.
    std::fs::create_dir_all(landing.path().join("resources")).unwrap();
    let later = format!(
        "{header}\n{}\n{}\n{}\n",
        rows[0].replace(",running,", ",stopped,"),
        rows[1].replace(",running,", ",stopped,"),
        rows[1].replacen(&b, &b.to_uppercase(), 1).replace(",running,", ",terminated,"),
    );
    std::fs::write(landing.path().join("resources/2025-08-01.csv"), later).unwrap();
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    let r = run(landing.path(), p).await.unwrap();
    let resources = r.silver.iter().find(|m| m.table == "resources").unwrap();
    assert_eq!((resources.bronze_rows, resources.superseded), (403, 3));
    assert!(resources.conserved());
    async fn state(lake: &std::path::Path, id: &str) -> String {
        sql_csv(lake, &format!("SELECT state FROM silver_resources WHERE resource_id = '{id}'")).await
    }
    assert_eq!(state(p, &a).await, "state\nstopped\n");
    assert_eq!(state(p, &b).await, "state\nterminated\n");
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_resources").await, 400);
    assert_eq!(sql_i64(p, "SELECT count(DISTINCT resource_id) FROM silver_resources").await, 400);

    // A later run's delivery of the same file name is newer again.
    std::fs::write(
        landing.path().join("resources/2025-08-01.csv"),
        format!("{header}\n{}\n", rows[0].replace(",running,", ",terminated,")),
    )
    .unwrap();
    let r = run(landing.path(), p).await.unwrap();
    let resources = r.silver.iter().find(|m| m.table == "resources").unwrap();
    assert_eq!((resources.bronze_rows, resources.superseded), (404, 4));
    assert_eq!(state(p, &a).await, "state\nterminated\n");
    assert_eq!(state(p, &b).await, "state\nterminated\n");
    assert_eq!(sql_i64(p, "SELECT count(*) FROM silver_resources").await, 400);
}

#[tokio::test]
async fn a_fail_rule_stops_the_run_with_the_rule_named() {
    let lake = tempfile::tempdir().unwrap();
    let silver = SilverSettings {
        rule_actions: BTreeMap::from([("usage_events.cost_not_negative".to_string(), Action::Fail)]),
        ..Default::default()
    };
    let err = run_with(&messy_landing(), lake.path(), silver).await.unwrap_err().to_string();
    assert!(
        err.starts_with("data-quality rule usage_events.cost_not_negative failed on usage_events"),
        "{err}"
    );
    assert!(err.contains("\"event_id\":\"e12\""), "{err}");
}

#[tokio::test]
async fn rerunning_leaves_silver_and_quarantine_identical() {
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    run(&messy_landing(), p).await.unwrap();
    let dump = || async {
        let mut s = String::new();
        for (t, k) in [
            ("silver_usage_events", "event_id"),
            ("silver_customers_orgs", "org_id, version"),
            ("silver_usage_daily", "org_id, service, usage_date"),
            ("quarantine_usage_events", "rule_id, record_hash"),
        ] {
            // Whole rows, run_id and quarantined_at included: nothing may be rewritten.
            s += &sql_text(p, &format!("SELECT * FROM {t} ORDER BY {k}")).await;
        }
        s
    };
    let first = dump().await;
    run(&messy_landing(), p).await.unwrap();
    assert_eq!(dump().await, first);
}
