//! Silver and gold on a real Ballista cluster: a scheduler and two executors, each a separate
//! `cloudlake` process on loopback, and `run --ballista` against them.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudlake::config::Settings;
use cloudlake::telemetry::Progress;

use crate::gold::dump_gold;
use crate::{assert_same_text, copy_dir, real_landing, run, sql_i64, sql_text};

/// Child processes killed when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_cloudlake"))
        .args(args)
        .env("CLOUDLAKE_LOG", "info")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_listening(port: u16, what: &str, log: &Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "{what} did not listen on {port} within 60 s; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
            .sum()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn silver_and_gold_on_a_ballista_cluster_equal_a_local_run() {
    let tmp = tempfile::tempdir().unwrap();
    let scheduler = free_port();
    let sched_log = tmp.path().join("scheduler.log");
    let mut procs =
        Procs(vec![spawn(&["scheduler", "--bind", &format!("127.0.0.1:{scheduler}")], &sched_log)]);
    wait_listening(scheduler, "the scheduler", &sched_log);
    let mut work_dirs = Vec::new();
    for i in 0..2 {
        let (flight, grpc) = (free_port(), free_port());
        let work = tmp.path().join(format!("executor-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let log = tmp.path().join(format!("executor-{i}.log"));
        procs.0.push(spawn(
            &[
                "executor",
                "--scheduler",
                &format!("127.0.0.1:{scheduler}"),
                "--bind",
                &format!("127.0.0.1:{flight}"),
                "--grpc-port",
                &grpc.to_string(),
                "--concurrent-tasks",
                "2",
                "--work-dir",
                work.to_str().unwrap(),
            ],
            &log,
        ));
        wait_listening(flight, "an executor", &log);
        work_dirs.push(work);
    }

    // The same landing data, once locally and once with silver and gold on the cluster.
    let landing = tmp.path().join("landing");
    copy_dir(&real_landing(), &landing);
    let local = tmp.path().join("local");
    let remote = tmp.path().join("clustered");
    run(&landing, &local).await.unwrap();
    let mut settings =
        Settings::resolve(Some(landing.clone()), Some(remote.clone()), Default::default()).unwrap();
    settings.ballista = Some(format!("df://127.0.0.1:{scheduler}"));
    let started = Instant::now();
    let report = cloudlake::pipeline::run(&settings, &Progress::new(0, false)).await.unwrap();
    eprintln!("run --ballista: {:?}", started.elapsed());
    assert!(!report.reconciliation.is_empty() && report.reconciliation.iter().all(|c| c.ok()));
    let events = report.silver.iter().find(|m| m.table == "usage_events").unwrap();
    assert!(events.rows > 40_000 && events.conserved(), "{events:?}");

    // Every mart, the daily features and the silver events are identical.
    assert_same_text(&dump_gold(&remote).await, &dump_gold(&local).await);
    for q in [
        "SELECT * FROM silver_usage_daily ORDER BY org_id, usage_date, service",
        "SELECT count(*), count(DISTINCT event_id), sum(cost_usd), sum(CAST(value AS DECIMAL(38, 6))), min(event_ts), max(event_ts) \
         FROM silver_usage_events",
        "SELECT stage, rule_id, count(*), count(DISTINCT record_hash) FROM quarantine_usage_events GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT * FROM silver_customers_orgs ORDER BY org_id, version",
    ] {
        assert_same_text(&sql_text(&remote, q).await, &sql_text(&local, q).await);
    }
    // Both executors ran stages: each wrote shuffle files.
    for w in &work_dirs {
        assert!(files_under(w) > 0, "executor {} ran no task", w.display());
    }
    // No scratch file is left in the lake.
    assert_eq!(files_under(&remote.join("_cluster")), 0);

    // New events: a second run lands them and rebuilds on the cluster; still equal to local.
    let extra = landing.join("usage_events_stream").join("zz_extra.jsonl");
    let first = std::fs::read_dir(landing.join("usage_events_stream"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&first).unwrap();
    let lines: Vec<String> =
        text.lines().take(200).map(|l| l.replacen("\"event_id\": \"", "\"event_id\": \"extra-", 1)).collect();
    std::fs::write(&extra, lines.join("\n") + "\n").unwrap();
    cloudlake::pipeline::run(&settings, &Progress::new(0, false)).await.unwrap();
    run(&landing, &local).await.unwrap();
    assert_same_text(&dump_gold(&remote).await, &dump_gold(&local).await);
    let q = "SELECT count(*) FROM silver_usage_events WHERE event_id LIKE 'extra-%'";
    assert!(sql_i64(&remote, q).await > 0);
    assert_eq!(sql_i64(&remote, q).await, sql_i64(&local, q).await);
    drop(procs);
}

#[tokio::test]
async fn a_scheduler_that_does_not_answer_fails_the_run_in_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let mut settings =
        Settings::resolve(Some(real_landing()), Some(tmp.path().join("lake")), Default::default()).unwrap();
    settings.ballista = Some(format!("df://127.0.0.1:{}", free_port()));
    let e = cloudlake::pipeline::run(&settings, &Progress::new(0, false)).await.unwrap_err().to_string();
    assert!(e.starts_with("Ballista cluster: cannot reach the scheduler at 127.0.0.1:"), "{e}");
    settings.ballista = Some("http://127.0.0.1:1".into());
    let e = cloudlake::pipeline::run(&settings, &Progress::new(0, false)).await.unwrap_err().to_string();
    assert!(e.contains("expected df://HOST:PORT"), "{e}");
}
