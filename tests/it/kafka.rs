//! Streaming from a real Apache Kafka broker (KRaft, started by `scripts/kafka.sh`).
//!
//! The shared broker comes from `CLOUDLAKE_TEST_KAFKA` (`scripts/test-all.sh` starts one with
//! free ports); the restart test starts a broker of its own, which it kills and restarts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudlake::stream::{StreamSource, kafka};

use crate::gold::dump_gold;
use crate::stream::{dump_silver_excluding, landing_with_events, settings, stream_once};

/// Lineage differs by design: `kafka:<topic>/<partition>` and offsets instead of file and line.
const LINEAGE: &str = ", source_file, source_line";
use crate::{real_landing, run, sql_i64};

fn broker() -> String {
    std::env::var("CLOUDLAKE_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "CLOUDLAKE_TEST_KAFKA is not set. These tests need a real Kafka broker: run \
             `scripts/kafka.sh start` and export CLOUDLAKE_TEST_KAFKA=127.0.0.1:9092 (scripts/test-all.sh does both)"
        )
    })
}

fn topic(name: &str) -> String {
    format!("{name}_{}", uuid::Uuid::new_v4().simple())
}

/// The first `n` real event files.
fn event_files(n: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(real_landing().join("usage_events_stream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.truncate(n);
    files
}

/// A lake with the masters loaded and no event, plus a reference lake built by a batch run over
/// the first `n` event files.
async fn lakes(root: &Path, n: usize) -> (PathBuf, PathBuf, PathBuf) {
    let landing = root.join("landing");
    landing_with_events(&landing, 0);
    let lake = root.join("lake");
    run(&landing, &lake).await.unwrap();
    let ref_landing = root.join("ref_landing");
    landing_with_events(&ref_landing, n);
    let reference = root.join("reference");
    run(&ref_landing, &reference).await.unwrap();
    (landing, lake, reference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_replayed_from_the_landing_files_equals_the_batch_run() {
    let root = tempfile::tempdir().unwrap();
    let (landing, lake, reference) = lakes(root.path(), 30).await;
    let topic = topic("events");
    let sent = kafka::produce(&broker(), &topic, event_files(30), 3).await.unwrap();
    assert_eq!(sent.messages, 10_800);

    let mut s = settings(&landing, &lake, 1);
    s.stream.max_batch_events = 4_000;
    let source = StreamSource::Kafka { brokers: broker(), topic: topic.clone() };
    let r = stream_once(&s, &source).await;
    assert!(r.batches >= 3, "{r:?}");
    assert_eq!((r.totals.bronze.read, r.totals.bronze.written), (10_800, 10_800));
    assert_eq!(
        sql_i64(&lake, &format!("SELECT count(DISTINCT source_file) FROM bronze_usage_events WHERE source_file LIKE 'kafka:{topic}/%'")).await,
        3
    );
    // Lineage: a message's line is its offset; each partition holds offsets 0..n-1.
    assert_eq!(
        sql_i64(
            &lake,
            "SELECT count(*) FROM (SELECT source_file, min(source_line) AS lo, max(source_line) AS hi, count(*) AS n
             FROM bronze_usage_events GROUP BY source_file) WHERE lo <> 0 OR hi <> n - 1"
        )
        .await,
        0
    );
    crate::assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
    crate::assert_same_text(
        &dump_silver_excluding(&lake, LINEAGE).await,
        &dump_silver_excluding(&reference, LINEAGE).await,
    );

    // The same messages again (a producer retrying a whole file): all duplicates.
    let files = event_files(2);
    kafka::produce(&broker(), &topic, files, 3).await.unwrap();
    let again = stream_once(&s, &source).await;
    assert_eq!(
        (again.totals.bronze.read, again.totals.bronze.written, again.totals.bronze.duplicates),
        (720, 0, 720)
    );
    crate::assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
}

/// A broker of the test's own (fresh folder, free ports), killed on drop.
struct Broker {
    dir: tempfile::TempDir,
    port: u16,
}

impl Broker {
    fn new() -> Broker {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Broker { dir: tempfile::tempdir().unwrap(), port: free() }
    }

    fn script(&self, action: &str) {
        let controller = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
            .args([action, self.dir.path().to_str().unwrap()])
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", controller.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/kafka.sh {action} failed");
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.script("kill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    let broker = Broker::new();
    broker.script("start");
    let root = tempfile::tempdir().unwrap();
    let (landing, lake, reference) = lakes(root.path(), 40).await;
    let topic = topic("restart");
    kafka::produce(&broker.address(), &topic, event_files(40), 2).await.unwrap();

    let config = root.path().join("cloudlake.toml");
    std::fs::write(
        &config,
        "[stream]\nmax_batch_events = 1500\ntrigger = \"100ms\"\nkafka_timeout = \"180s\"\n",
    )
    .unwrap();
    let log = root.path().join("stream.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudlake"))
        .args(["stream", "--kafka", &broker.address(), "--topic", &topic, "-q"])
        .arg("--landing")
        .arg(&landing)
        .arg("--lake")
        .arg(&lake)
        .arg("--config")
        .arg(&config)
        .env("CLOUDLAKE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let events = |lake: PathBuf| async move {
        if !lake.join("bronze/usage_events/_delta_log").is_dir() {
            return 0;
        }
        sql_i64(&lake, "SELECT count(*) FROM bronze_usage_events").await
    };
    // Kill the broker once the stream is under way, keep it down a few seconds, restart it.
    let started = Instant::now();
    while events(lake.clone()).await == 0 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before_kill = events(lake.clone()).await;
    assert!(before_kill > 0 && before_kill < 14_400, "kill the broker mid-stream: {before_kill} events in");
    broker.script("kill");
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.script("start");
    let started = Instant::now();
    while events(lake.clone()).await < 14_400 && started.elapsed() < Duration::from_secs(240) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the stream died: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Stop it like an operator would (SIGTERM: the current batch finishes).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", std::fs::read_to_string(&log).unwrap());

    assert_eq!(sql_i64(&lake, "SELECT count(*) FROM bronze_usage_events").await, 14_400);
    assert_eq!(sql_i64(&lake, "SELECT count(DISTINCT event_id) FROM bronze_usage_events").await, 14_400);
    crate::assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
    crate::assert_same_text(
        &dump_silver_excluding(&lake, LINEAGE).await,
        &dump_silver_excluding(&reference, LINEAGE).await,
    );
}
