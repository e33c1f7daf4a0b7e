//! Bronze over the real landing data and over the messy fixtures.

use cloudlake::bronze::BronzeMetrics;
use cloudlake::report::RunReport;

use crate::{copy_dir, messy_landing, real_landing, run, sql_csv, sql_i64, sql_text};

fn metrics<'a>(r: &'a RunReport, source: &str) -> &'a BronzeMetrics {
    r.bronze.iter().find(|m| m.source == source).unwrap()
}

#[tokio::test]
async fn real_landing_lands_every_record_with_exact_counts() {
    let lake = tempfile::tempdir().unwrap();
    let r = run(&real_landing(), lake.path()).await.unwrap();
    let expected = [
        ("customers_orgs", 80),
        ("users", 800),
        ("resources", 400),
        ("support_tickets", 1000),
        ("marketing_touches", 1500),
        ("nps_surveys", 92),
        ("billing_monthly", 240),
        ("usage_events", 43200),
    ];
    for (source, n) in expected {
        let m = metrics(&r, source);
        assert_eq!((m.read, m.written, m.quarantined, m.duplicates), (n, n, 0, 0), "{source}");
        assert!(m.cast_failures.is_empty(), "{source}: {:?}", m.cast_failures);
        assert_eq!(sql_i64(lake.path(), &format!("SELECT count(*) FROM bronze_{source}")).await, n as i64);
    }
    assert_eq!(metrics(&r, "usage_events").files, 120);
    let p = lake.path();
    // Partitioned by event date: 60 days, one folder each.
    assert_eq!(sql_i64(p, "SELECT count(DISTINCT event_date) FROM bronze_usage_events").await, 60);
    let partitions = std::fs::read_dir(p.join("bronze/usage_events"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("event_date="))
        .count();
    assert_eq!(partitions, 60);
    // Schema versions as ABOUT.md measures them; v1 has neither carbon_kg nor genai_tokens.
    assert_eq!(sql_i64(p, "SELECT count(*) FROM bronze_usage_events WHERE schema_version = 1").await, 10_800);
    assert_eq!(sql_i64(p, "SELECT count(carbon_kg) FROM bronze_usage_events").await, 32_400);
    assert_eq!(
        sql_i64(p, "SELECT count(genai_tokens) FROM bronze_usage_events WHERE schema_version = 1").await,
        0
    );
    // value: 877 nulls; the 1,309 numbers written as strings all cast.
    assert_eq!(sql_i64(p, "SELECT count(*) FROM bronze_usage_events WHERE value IS NULL").await, 877);
    assert_eq!(sql_i64(p, "SELECT count(*) FROM bronze_usage_events WHERE unit IS NULL").await, 2_075);
    // Money is exact: the sum of every cost_usd_increment, checked independently with Python's
    // Decimal over the raw JSON text, is 147433.9778.
    assert_eq!(
        sql_i64(p, "SELECT CAST(sum(cost_usd_increment) * 10000 AS BIGINT) FROM bronze_usage_events").await,
        1_474_339_778
    );
    assert_eq!(sql_i64(p, "SELECT sum(genai_tokens) FROM bronze_usage_events").await, 2_558_359);
    // Ingest metadata on every row.
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM bronze_usage_events WHERE ingest_ts IS NULL OR run_id IS NULL OR source_file NOT LIKE 'usage_events_stream/events_part_%.jsonl'").await,
        0
    );
    // The run report is on disk and says the same.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("_runs").join(format!("{}.json", r.run_id))).unwrap())
            .unwrap();
    assert_eq!(report["bronze"][7]["read"], 43200);
}

#[tokio::test]
async fn rerun_and_copied_files_change_nothing() {
    let landing = tempfile::tempdir().unwrap();
    copy_dir(&real_landing(), landing.path());
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    run(landing.path(), p).await.unwrap();
    let snapshot = |t: &'static str, order: &'static str| async move {
        sql_text(p, &format!("SELECT * FROM {t} ORDER BY {order}")).await
    };
    let events_before = snapshot("bronze_usage_events", "event_id").await;
    let orgs_before = snapshot("bronze_customers_orgs", "org_id").await;

    // Same input again: nothing written, every record counted as a duplicate.
    let r2 = run(landing.path(), p).await.unwrap();
    for m in &r2.bronze {
        assert_eq!((m.written, m.quarantined), (0, 0), "{}", m.source);
        assert_eq!(m.duplicates, m.read, "{}", m.source);
    }

    // A file copied under a new name, and a master re-delivered in a sub-folder.
    let ev = landing.path().join("usage_events_stream");
    std::fs::copy(ev.join("events_part_0007.jsonl"), ev.join("events_replay_0007.jsonl")).unwrap();
    std::fs::create_dir_all(landing.path().join("customers_orgs")).unwrap();
    std::fs::copy(
        landing.path().join("customers_orgs.csv"),
        landing.path().join("customers_orgs/redelivery.csv"),
    )
    .unwrap();
    // Event files already processed are not read again (the stream's checkpoint); the copy is
    // new, and every record in it is a duplicate.
    let r3 = run(landing.path(), p).await.unwrap();
    let m = metrics(&r3, "usage_events");
    assert_eq!((m.files, m.read, m.written, m.duplicates), (1, 360, 0, 360));
    assert_eq!(metrics(&r3, "customers_orgs").written, 0);

    assert_eq!(snapshot("bronze_usage_events", "event_id").await, events_before);
    assert_eq!(snapshot("bronze_customers_orgs", "org_id").await, orgs_before);
}

#[tokio::test]
async fn a_changed_master_record_is_a_new_version_not_a_duplicate() {
    let landing = tempfile::tempdir().unwrap();
    copy_dir(&real_landing(), landing.path());
    let lake = tempfile::tempdir().unwrap();
    run(landing.path(), lake.path()).await.unwrap();
    // A later delivery: org_pbhsahxt moves from standard to pro.
    let original = std::fs::read_to_string(landing.path().join("customers_orgs.csv")).unwrap();
    let header = original.lines().next().unwrap();
    let row =
        original.lines().find(|l| l.starts_with("org_pbhsahxt,")).unwrap().replace(",standard,", ",pro,");
    std::fs::create_dir_all(landing.path().join("customers_orgs")).unwrap();
    std::fs::write(landing.path().join("customers_orgs/2025-09-01.csv"), format!("{header}\n{row}\n"))
        .unwrap();
    let r = run(landing.path(), lake.path()).await.unwrap();
    assert_eq!(metrics(&r, "customers_orgs").written, 1);
    let versions = sql_text(
        lake.path(),
        "SELECT plan_tier, source_file FROM bronze_customers_orgs WHERE org_id = 'org_pbhsahxt' ORDER BY source_file",
    )
    .await;
    assert!(versions.contains("standard  | customers_orgs.csv"), "{versions}");
    assert!(versions.contains("pro       | customers_orgs/2025-09-01.csv"), "{versions}");
}

#[tokio::test]
async fn messy_feeds_are_typed_deduplicated_and_quarantined() {
    let lake = tempfile::tempdir().unwrap();
    let p = lake.path();
    let r = run(&messy_landing(), p).await.unwrap();
    for m in &r.bronze {
        assert!(m.conserved(), "{m:?}");
    }

    // customers_orgs: BOM, CRLF, a quoted comma, a blank line, a short row, a missing key,
    // invalid UTF-8, three uncastable values and an exact duplicate.
    let orgs = metrics(&r, "customers_orgs");
    assert_eq!((orgs.read, orgs.written, orgs.quarantined, orgs.duplicates), (7, 3, 3, 1));
    assert_eq!(orgs.cast_failures.iter().map(|(_, n)| n).sum::<u64>(), 3);
    assert_eq!(
        sql_csv(p, "SELECT org_id, org_name, hq_region, is_enterprise, signup_date, nps_score FROM bronze_customers_orgs ORDER BY org_id").await,
        "org_id,org_name,hq_region,is_enterprise,signup_date,nps_score\n\
         org_a,\"Acme, Inc.\", US-EAST ,true,2025-05-01,12.0\n\
         org_b,Beta Labs,eu-west,false,2025-06-01,\n\
         org_e,Eps,eu-west,,,\n"
    );
    assert_eq!(
        sql_csv(p, "SELECT rule_id, source_file, source_line, reason FROM quarantine_customers_orgs ORDER BY source_line").await,
        "rule_id,source_file,source_line,reason\n\
         bronze.field_count,customers_orgs.csv,5,\"expected 11 fields as in the header, found 10\"\n\
         bronze.missing_key,customers_orgs.csv,6,key column org_id is empty\n\
         bronze.invalid_utf8,customers_orgs.csv,7,the row holds bytes that are not UTF-8\n"
    );
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM quarantine_customers_orgs WHERE record = 'org_c,Gamma,Media,eu-west,free,False,2025-06-01,rep_b,lead,event'").await,
        1
    );

    // users: header in another order and case; timestamps with an offset or a space, in UTC.
    assert_eq!(
        sql_csv(p, "SELECT user_id, email, created_at, last_login FROM bronze_users").await,
        "user_id,email,created_at,last_login\nuser_1,a@x.io,2025-05-02T10:00:00Z,2025-05-01T10:00:00Z\n"
    );

    // usage events: every timestamp spelling lands on the same UTC instant; numbers as strings
    // cast; the unknown field is kept; duplicates within and across files are removed.
    let ev = metrics(&r, "usage_events");
    assert_eq!((ev.files, ev.read, ev.written, ev.quarantined, ev.duplicates), (3, 19, 14, 3, 2));
    assert_eq!(ev.cast_failures.iter().map(|(_, n)| n).sum::<u64>(), 2);
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM bronze_usage_events WHERE timestamp = TIMESTAMP '2025-08-17T01:55:00Z' AND event_id IN ('e1','e2','e3','e4','e5')").await,
        5
    );
    assert_eq!(
        sql_i64(p, "SELECT CAST(value AS BIGINT) FROM bronze_usage_events WHERE event_id = 'e1'").await,
        95
    );
    assert_eq!(
        sql_i64(
            p,
            "SELECT CAST(cost_usd_increment * 100 AS BIGINT) FROM bronze_usage_events WHERE event_id = 'e2'"
        )
        .await,
        50
    );
    assert_eq!(
        sql_i64(p, "SELECT count(*) FROM bronze_usage_events WHERE extra_json = '{\"surprise\":{\"a\":1}}'")
            .await,
        1
    );
    assert_eq!(sql_i64(p, "SELECT count(*) FROM bronze_usage_events WHERE event_id = 'e7' AND timestamp IS NULL AND value IS NULL").await, 1);
    assert_eq!(
        sql_csv(
            p,
            "SELECT rule_id, source_file, source_line FROM quarantine_usage_events WHERE stage = 'bronze' ORDER BY source_line"
        )
        .await,
        "rule_id,source_file,source_line\n\
         bronze.malformed_json,usage_events_stream/events_a.jsonl,7\n\
         bronze.missing_key,usage_events_stream/events_a.jsonl,8\n\
         bronze.invalid_utf8,usage_events_stream/events_a.jsonl,11\n"
    );

    // Running again quarantines nothing twice and writes nothing.
    let r2 = run(&messy_landing(), p).await.unwrap();
    assert!(r2.bronze.iter().all(|m| m.written == 0 && m.quarantined == 0 && m.duplicates == m.read));
    assert_eq!(sql_i64(p, "SELECT count(*) FROM quarantine_usage_events WHERE stage = 'bronze'").await, 3);
}

#[tokio::test]
async fn a_missing_landing_file_is_one_clear_error_and_nothing_is_written() {
    let landing = tempfile::tempdir().unwrap();
    copy_dir(&messy_landing(), landing.path());
    std::fs::remove_file(landing.path().join("billing_monthly.csv")).unwrap();
    let lake = tempfile::tempdir().unwrap();
    let err = run(landing.path(), lake.path()).await.unwrap_err().to_string();
    assert!(err.starts_with("landing input "), "{err}");
    assert!(err.contains("billing_monthly.csv not found"), "{err}");
    assert!(!lake.path().join("bronze").exists());
}

#[tokio::test]
async fn a_source_with_no_readable_record_still_gets_its_tables() {
    let landing = tempfile::tempdir().unwrap();
    copy_dir(&messy_landing(), landing.path());
    std::fs::write(
        landing.path().join("nps_surveys.csv"),
        "org_id,survey_date,nps_score,comment\norg_a,2025-08-01,1,x,extra\n",
    )
    .unwrap();
    let lake = tempfile::tempdir().unwrap();
    let r = run(landing.path(), lake.path()).await.unwrap();
    let nps = metrics(&r, "nps_surveys");
    assert_eq!((nps.read, nps.written, nps.quarantined), (1, 0, 1));
    assert_eq!(sql_i64(lake.path(), "SELECT count(*) FROM bronze_nps_surveys").await, 0);
    assert_eq!(sql_i64(lake.path(), "SELECT count(*) FROM silver_nps_surveys").await, 0);
}
