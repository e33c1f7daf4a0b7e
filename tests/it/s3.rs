//! The lake in S3-compatible object storage: a real S3 API server (moto, started by
//! `scripts/s3.sh`), reached through delta-rs's S3 support like AWS S3 itself.
//!
//! `CLOUDLAKE_TEST_S3` names the bucket (`s3://cloudlake`) and the usual `AWS_*` variables the
//! endpoint and credentials (`scripts/test-all.sh` sets them; `scripts/s3.sh env` prints them).

use std::path::PathBuf;

use cloudlake::lake::{Lake, Layer};

use crate::gold::dump_gold;
use crate::{assert_same_text, real_landing, run, sql_text};

/// A fresh prefix in the test bucket.
fn remote_lake() -> PathBuf {
    let bucket = std::env::var("CLOUDLAKE_TEST_S3").unwrap_or_else(|_| {
        panic!(
            "CLOUDLAKE_TEST_S3 is not set. These tests need an S3-compatible server: run \
             `scripts/s3.sh start`, `eval \"$(scripts/s3.sh env)\"` and export CLOUDLAKE_TEST_S3=s3://cloudlake \
             (scripts/test-all.sh does all three)"
        )
    });
    PathBuf::from(format!("{}/lake-{}", bucket.trim_end_matches('/'), uuid::Uuid::new_v4().simple()))
}

#[tokio::test]
async fn a_lake_in_object_storage_equals_a_local_one() {
    let remote = remote_lake();
    let local = tempfile::tempdir().unwrap();
    let r = run(&real_landing(), &remote).await.unwrap();
    assert!(r.reconciliation.iter().all(|c| c.ok()) && !r.reconciliation.is_empty());
    assert_eq!(r.lake, remote, "the report names the lake's URL");
    run(&real_landing(), local.path()).await.unwrap();
    assert_same_text(&dump_gold(&remote).await, &dump_gold(local.path()).await);
    let silver = "SELECT count(*), count(DISTINCT event_id), sum(cost_usd), min(event_ts), max(event_ts) \
                  FROM silver_usage_events";
    assert_same_text(&sql_text(&remote, silver).await, &sql_text(local.path(), silver).await);

    let lake = Lake::new(&remote).unwrap();
    assert!(lake.is_remote());
    let tables = lake.tables().await.unwrap();
    assert_eq!(tables, Lake::new(local.path()).unwrap().tables().await.unwrap());
    assert!(tables.contains(&(Layer::Gold, "org_health".to_string())));

    // A re-run reads everything again and writes nothing; its report is the latest one.
    let again = run(&real_landing(), &remote).await.unwrap();
    assert!(again.bronze.iter().all(|b| b.written == 0 && b.quarantined == 0), "{:?}", again.bronze);
    assert_eq!(cloudlake::quality::latest_run(&lake).await.unwrap().run_id, again.run_id);
    assert!(!cloudlake::quality::report(&lake, 1).await.unwrap().rules.is_empty());

    // Compaction and vacuum work on objects too, and change no answer.
    cloudlake::lake::maintain::maintain(&lake, 0).await.unwrap();
    assert_same_text(&dump_gold(&remote).await, &dump_gold(local.path()).await);
    let _ = std::fs::remove_dir_all(lake.state_dir());
}
