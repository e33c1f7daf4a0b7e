//! Gold: marts over the real data, reconciliation, idempotency, incremental = full rebuild.

use std::path::Path;

use crate::{assert_same_text, copy_dir, real_landing, run, sql_i64, sql_text};

/// Every table of the lake, each sorted by all its columns.
async fn dump_all(lake: &Path) -> String {
    let mut s = String::new();
    let handle = cloudlake::lake::Lake::new(lake).unwrap();
    let ctx = cloudlake::lake::session();
    for (layer, name) in handle.tables().await.unwrap() {
        let table = format!("{}_{name}", layer.as_str());
        handle.register(&ctx, layer, &name).await.unwrap();
        let schema = ctx.table(&table).await.unwrap().schema().as_arrow().clone();
        let columns: Vec<String> = schema.fields().iter().map(|f| format!("\"{}\"", f.name())).collect();
        s += &format!("== {table}\n");
        s += &sql_text(lake, &format!("SELECT * FROM {table} ORDER BY {}", columns.join(", "))).await;
    }
    s
}

pub(crate) async fn dump_gold(lake: &Path) -> String {
    let mut s = String::new();
    for (mart, order) in [
        ("org_daily_usage_by_service", "org_id, usage_date, service"),
        ("cost_anomaly_mart", "org_id, usage_date, service"),
        ("genai_tokens_by_org_date", "org_id, usage_date"),
        ("revenue_by_org_month", "org_id, month"),
        ("tickets_by_org_date", "org_id, ticket_date, severity"),
        ("org_health", "org_id"),
    ] {
        s += &format!("== {mart}\n");
        s += &sql_text(lake, &format!("SELECT * FROM gold_{mart} ORDER BY {order}")).await;
    }
    s
}

#[tokio::test]
async fn marts_over_the_real_data_reconcile_to_the_cent() {
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    let r = run(&real_landing(), p).await.unwrap();
    let rows: Vec<(&str, u64)> = r.gold.iter().map(|m| (m.mart.as_str(), m.computed)).collect();
    // Expected grains, counted independently over the raw files.
    assert_eq!(
        rows,
        vec![
            ("org_daily_usage_by_service", 11_050),
            ("cost_anomaly_mart", 11_050),
            ("genai_tokens_by_org_date", 1_131),
            ("revenue_by_org_month", 240),
            ("tickets_by_org_date", 984),
            ("org_health", 80),
        ]
    );
    assert!(r.reconciliation.iter().all(|c| c.ok()) && r.reconciliation.len() == 7);
    // Total cost = the sum of valid silver event costs, exactly (148,351.5759 by Python's Decimal).
    assert_eq!(
        sql_i64(p, "SELECT CAST(sum(cost_usd) * 10000 AS BIGINT) FROM gold_org_daily_usage_by_service").await,
        1_483_515_759
    );
    assert_eq!(sql_i64(p, "SELECT sum(total_tokens) FROM gold_genai_tokens_by_org_date").await, 2_545_481);
    assert_eq!(sql_i64(p, "SELECT sum(tickets) FROM gold_tickets_by_org_date").await, 1_000);
    assert_eq!(
        sql_i64(p, "SELECT sum(tickets) FROM gold_tickets_by_org_date WHERE severity = 'critical'").await,
        56
    );
    assert_eq!(
        sql_i64(p, "SELECT sum(sla_breaches) FROM gold_tickets_by_org_date WHERE severity = 'critical'")
            .await,
        2
    );
    assert_eq!(sql_i64(p, "SELECT count(*) FROM gold_revenue_by_org_month WHERE revenue_usd <> subtotal_usd - credits_usd + taxes_usd").await, 0);
    assert_eq!(
        sql_i64(p, "SELECT CAST(sum(revenue_usd) * 1000000 AS BIGINT) FROM gold_revenue_by_org_month").await,
        164_293_062_232
    );
    assert_eq!(
        sql_i64(
            p,
            "SELECT count(*) FROM gold_revenue_by_org_month WHERE currency = 'USD' AND fx_rate_to_usd <> 1"
        )
        .await,
        0
    );
    // Anomalous events only on anomalous days; org attributes on every row.
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM gold_org_daily_usage_by_service g JOIN gold_cost_anomaly_mart a USING (org_id, usage_date, service)
                    WHERE (a.is_anomaly AND g.anomalous_events <> g.events) OR (NOT a.is_anomaly AND g.anomalous_events <> 0)").await,
        0
    );
    assert_eq!(
        sql_i64(
            p,
            "SELECT count(*) FROM gold_org_daily_usage_by_service WHERE org_name IS NULL OR plan_tier IS NULL"
        )
        .await,
        0
    );
    // cost_per_million_tokens = cost / tokens × 1e6.
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM gold_genai_tokens_by_org_date WHERE total_tokens > 0
                    AND abs(CAST(cost_per_million_tokens AS DOUBLE) - CAST(genai_cost_usd AS DOUBLE) * 1e6 / total_tokens) > 0.000001").await,
        0
    );
    // Org health: reference date = latest usage date; churn risk within 0..100.
    assert_eq!(sql_i64(p, "SELECT count(DISTINCT reference_date) FROM gold_org_health").await, 1);
    assert_eq!(sql_i64(p, "SELECT count(*) FROM gold_org_health WHERE churn_risk < 0 OR churn_risk > 100 OR churn_risk IS NULL").await, 0);
    assert_eq!(
        sql_i64(p, "SELECT CAST(sum(cost_last_30d_usd) * 10000 AS BIGINT) FROM gold_org_health").await,
        sql_i64(p, "SELECT CAST(sum(cost_usd) * 10000 AS BIGINT) FROM gold_org_daily_usage_by_service WHERE usage_date > (SELECT max(usage_date) FROM gold_org_daily_usage_by_service) - INTERVAL '30 days'").await
    );

    // Re-running over the same input leaves every table identical: bronze, silver, quarantine, gold.
    let before = dump_all(p).await;
    assert_eq!(
        before.matches("== ").count(),
        8 + 9 + 1 + 6,
        "bronze, silver, quarantine (usage_events), gold"
    );
    run(&real_landing(), p).await.unwrap();
    assert_same_text(&dump_all(p).await, &before);
}

#[tokio::test]
async fn new_event_files_update_only_event_marts_and_equal_a_full_rebuild() {
    // First delivery: 100 of the 120 event files. The rest arrive later; since every file spans
    // the whole period, they touch old days too (late data).
    let landing = tempfile::tempdir().unwrap();
    copy_dir(&real_landing(), landing.path());
    let held = tempfile::tempdir().unwrap();
    let ev = landing.path().join("usage_events_stream");
    for i in 100..120 {
        let name = format!("events_part_{i:04}.jsonl");
        std::fs::rename(ev.join(&name), held.path().join(&name)).unwrap();
    }
    let lake = tempfile::tempdir().unwrap();
    // The first run builds every mart from scratch; the events then arrive as micro-batches.
    let first = run(landing.path(), lake.path()).await.unwrap();
    assert!(first.gold.iter().all(|m| m.refresh.starts_with("full")), "{:?}", first.gold);
    let table_rows = sql_i64(lake.path(), "SELECT count(*) FROM silver_usage_daily").await as u64;

    // 20 files over the whole period change most daily rows (a day's own features, or the
    // trailing baseline of the 28 days after it): the event marts are rewritten whole from the
    // daily series; the batch marts are left as they are.
    for i in 100..120 {
        let name = format!("events_part_{i:04}.jsonl");
        std::fs::rename(held.path().join(&name), ev.join(&name)).unwrap();
    }
    let second = run(landing.path(), lake.path()).await.unwrap();
    let refresh = |r: &cloudlake::report::RunReport| -> Vec<(String, String)> {
        r.gold.iter().map(|m| (m.mart.clone(), m.refresh.clone())).collect()
    };
    let expect = |events: &str| -> Vec<(String, String)> {
        [
            ("org_daily_usage_by_service", events),
            ("cost_anomaly_mart", events),
            ("genai_tokens_by_org_date", events),
            ("revenue_by_org_month", "unchanged"),
            ("tickets_by_org_date", "unchanged"),
            ("org_health", "full"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    };
    assert_eq!(refresh(&second), expect("full"));
    let totals = &second.stream.as_ref().unwrap().totals;
    assert!(totals.daily_rows * 4 >= table_rows, "{totals:?}");
    let full = tempfile::tempdir().unwrap();
    run(&real_landing(), full.path()).await.unwrap();
    assert_same_text(&dump_gold(lake.path()).await, &dump_gold(full.path()).await);

    // A few late events of one file (genai and storage) touch a few series: only their keys
    // are MERGEd.
    let source = std::fs::read_to_string(ev.join("events_part_0007.jsonl")).unwrap();
    let of = |service: &str, n: usize| -> Vec<String> {
        let tag = format!("\"service\": \"{service}\"");
        source.lines().filter(|l| l.contains(&tag)).take(n).map(|l| l.replace("\"evt_", "\"late_")).collect()
    };
    let late = [of("genai", 2), of("storage", 3)].concat().join("\n") + "\n";
    std::fs::write(ev.join("events_part_0120.jsonl"), &late).unwrap();
    let third = run(landing.path(), lake.path()).await.unwrap();
    assert_eq!(refresh(&third), expect("merge"));
    let daily = &third.gold[0];
    assert!(daily.computed > 0 && daily.computed * 4 < table_rows, "{daily:?}");
    assert_eq!(daily.updated + daily.inserted, daily.computed);
    let full = tempfile::tempdir().unwrap();
    copy_dir(landing.path(), full.path());
    let full_lake = tempfile::tempdir().unwrap();
    run(full.path(), full_lake.path()).await.unwrap();
    assert_same_text(&dump_gold(lake.path()).await, &dump_gold(full_lake.path()).await);
}

#[tokio::test]
async fn changed_settings_force_a_full_gold_build() {
    let landing = tempfile::tempdir().unwrap();
    copy_dir(&real_landing(), landing.path());
    let ev = landing.path().join("usage_events_stream");
    let held = tempfile::tempdir().unwrap();
    std::fs::rename(ev.join("events_part_0119.jsonl"), held.path().join("events_part_0119.jsonl")).unwrap();
    let lake = tempfile::tempdir().unwrap();
    run(landing.path(), lake.path()).await.unwrap();
    std::fs::rename(held.path().join("events_part_0119.jsonl"), ev.join("events_part_0119.jsonl")).unwrap();
    // New events *and* new anomaly thresholds: a merge would keep stale scores elsewhere.
    let mut silver = cloudlake::silver::SilverSettings::default();
    silver.anomaly.zscore_threshold = 2.0;
    let r = crate::run_with(landing.path(), lake.path(), silver.clone()).await.unwrap();
    assert!(r.gold.iter().all(|m| m.refresh.starts_with("full")), "{:?}", r.gold);
    let full = tempfile::tempdir().unwrap();
    crate::run_with(&real_landing(), full.path(), silver).await.unwrap();
    assert_same_text(&dump_gold(lake.path()).await, &dump_gold(full.path()).await);
}

/// The rows a rebuild gives, whatever its chunks: silver events and daily features (without the
/// run's lineage), the quarantined events by rule and every mart.
async fn rebuilt_rows(lake: &Path) -> String {
    let mut s = crate::stream::dump_silver(lake).await;
    s += &sql_text(lake, "SELECT rule_id, count(*) FROM quarantine_usage_events GROUP BY 1 ORDER BY 1").await;
    s + &dump_gold(lake).await
}

#[tokio::test]
async fn a_rebuild_in_many_chunks_equals_one_in_a_single_chunk() {
    // Micro-batches of 1 MB make the first run a backfill: the events land in bronze, then silver
    // and gold are rebuilt from it, in one chunk (43,200 events) or in chunks of 4,000 events,
    // whose writes, daily features and event marts overlap the next chunk or bucket.
    let settings = |lake: &Path, chunk: Option<i64>| {
        let mut s = crate::stream::settings(&real_landing(), lake, 1024 * 1024);
        s.silver.rebuild_chunk_events = chunk;
        s
    };
    let progress = cloudlake::telemetry::Progress::new(0, false);
    let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = cloudlake::pipeline::run(&settings(one.path(), None), &progress).await.unwrap();
    let b = cloudlake::pipeline::run(&settings(many.path(), Some(4_000)), &progress).await.unwrap();
    let files = |lake: &Path| {
        let daily = std::fs::read_dir(lake.join("silver/usage_daily")).unwrap();
        daily.filter(|f| f.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet")).count()
    };
    assert_eq!(files(one.path()), 1, "one bucket of daily rows");
    assert!(files(many.path()) >= 8, "a bucket of daily rows per chunk: {}", files(many.path()));

    let figures = |r: &cloudlake::report::RunReport| {
        let events = r.silver.iter().find(|m| m.table == "usage_events").unwrap();
        let gold: Vec<(String, u64)> = r.gold.iter().map(|m| (m.mart.clone(), m.computed)).collect();
        (events.rows, events.quarantined, events.rules.clone(), r.daily.clone(), gold)
    };
    assert_eq!(figures(&a), figures(&b));
    assert!(a.reconciliation.iter().all(|c| c.ok()) && b.reconciliation.iter().all(|c| c.ok()));
    assert_same_text(&rebuilt_rows(many.path()).await, &rebuilt_rows(one.path()).await);
}
