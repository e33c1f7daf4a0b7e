//! Streaming benchmark: freshness from files and sustained throughput from Kafka.
//!
//! `cargo bench --bench stream` builds the release binary, then:
//!
//! 1. **freshness**: a lake with the bundled masters, `cloudlake stream` following the landing
//!    folder with a 500 ms trigger; `CLOUDLAKE_BENCH_DELIVERIES` times (default 10), a file of
//!    360 new events is delivered (written, then renamed into the folder) and the time until its
//!    events are all in `silver_usage_events` and counted in `gold_org_daily_usage_by_service` is
//!    measured (a reader polling the lake every 20 ms, its tables kept open and brought up to date
//!    from new commits, as a dashboard would);
//! 2. **Kafka throughput**: `cloudlake generate --scale CLOUDLAKE_BENCH_SCALE` (default 20),
//!    `cloudlake produce` into a fresh topic, then `cloudlake stream --kafka --once`: events/s of
//!    the whole catch-up, and its resident memory sampled every 250 ms (peak and per quarter, to
//!    show it stays flat). The broker is `CLOUDLAKE_BENCH_KAFKA`, else one started with
//!    `scripts/kafka.sh` in a temporary folder. `CLOUDLAKE_BENCH_DAYS=N` makes it a live feed
//!    instead: `generate --days N --in-order` (events in time order over N days, a few late,
//!    some very late), run for minutes at larger N; `CLOUDLAKE_BENCH_STATE_MB` sets the stream's
//!    `[stream] state_memory_mb`. `CLOUDLAKE_BENCH_DELIVERIES=0` skips the freshness part.
//!
//! Prints one table and writes `$CARGO_TARGET_DIR/bench/stream.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cloudlake(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudlake"));
    cmd.args(args).env("CLOUDLAKE_LOG", "warn,deltalake_core::operations::merge=error");
    cmd
}

fn ok(cmd: &mut Command) {
    let status = cmd.stdout(Stdio::null()).status().expect("spawn cloudlake");
    assert!(status.success(), "{cmd:?} failed");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A reader of the three tables a delivery must reach, the way a dashboard keeps them: opened
/// once, then brought up to date from the new commits only before each look (a re-open would
/// replay the whole log every 20 ms and load the 2 cores the stream runs on).
struct Reader {
    lake: cloudlake::lake::Lake,
    ctx: datafusion::prelude::SessionContext,
    tables: Vec<(cloudlake::lake::Layer, &'static str, Option<deltalake::DeltaTable>, Option<u64>)>,
}

impl Reader {
    fn new(lake: &Path) -> Self {
        use cloudlake::lake::{Lake, Layer};
        Reader {
            lake: Lake::new(lake).expect("lake"),
            ctx: cloudlake::lake::session(),
            tables: [
                (Layer::Silver, "usage_events"),
                (Layer::Quarantine, "usage_events"),
                (Layer::Gold, "org_daily_usage_by_service"),
            ]
            .into_iter()
            .map(|(layer, name)| (layer, name, None, None))
            .collect(),
        }
    }

    /// Registers each table's latest version; false while one does not exist yet.
    async fn refresh(&mut self) -> bool {
        for (layer, name, table, registered) in &mut self.tables {
            match table {
                None => *table = self.lake.open(*layer, name).await.ok().flatten(),
                Some(t) => {
                    let _ = t.update_incremental(None).await;
                }
            }
            let Some(t) = table.as_ref() else { return false };
            if t.version() != *registered {
                let sql_name = format!("{}_{}", layer.as_str(), name);
                if cloudlake::cluster::register_delta(&self.ctx, &sql_name, t).await.is_err() {
                    return false;
                }
                *registered = t.version();
            }
        }
        true
    }

    /// Whether a delivery of `n` events from `file` is visible: all its events are in
    /// `silver_usage_events` (or quarantined by a rule) and gold counts every silver event.
    async fn visible(&mut self, file: &str, n: i64) -> bool {
        if !self.refresh().await {
            return false;
        }
        let sql = format!(
            "SELECT
               (SELECT count(*) FROM silver_usage_events WHERE source_file LIKE '%{file}') AS a,
               (SELECT count(*) FROM quarantine_usage_events WHERE source_file LIKE '%{file}') AS b,
               (SELECT count(*) FROM silver_usage_events) AS c,
               (SELECT CAST(sum(events) AS BIGINT) FROM gold_org_daily_usage_by_service) AS d"
        );
        let Ok(df) = self.ctx.sql(&sql).await else { return false };
        let Ok(b) = df.collect().await else { return false };
        let Some(b) = b.first().filter(|b| b.num_rows() > 0) else { return false };
        let v: Vec<i64> = (0..4)
            .map(|i| {
                let c = datafusion::arrow::compute::cast(
                    b.column(i),
                    &datafusion::arrow::datatypes::DataType::Int64,
                )
                .expect("cast");
                let c = c.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().expect("i64");
                if datafusion::arrow::array::Array::is_null(c, 0) { 0 } else { c.value(0) }
            })
            .collect();
        v[0] > 0 && v[0] + v[1] >= n && v[3] == v[2]
    }
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn freshness(scratch: &Path, deliveries: usize) -> Vec<Duration> {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("datalake/landing");
    let landing = scratch.join("fresh_landing");
    std::fs::create_dir_all(landing.join("usage_events_stream")).expect("mkdir");
    for entry in std::fs::read_dir(&bundled).expect("landing") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            std::fs::copy(&p, landing.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    let lake = scratch.join("fresh_lake");
    ok(&mut cloudlake(&[
        "run",
        "-q",
        "--landing",
        landing.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]));
    let template =
        std::fs::read_to_string(bundled.join("usage_events_stream/events_part_0000.jsonl")).expect("read");
    let mut child = cloudlake(&["stream", "-q", "--trigger", "500ms", "--landing"])
        .arg(&landing)
        .arg("--lake")
        .arg(&lake)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stream");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut reader = Reader::new(&lake);
    let mut latencies = Vec::new();
    for k in 0..deliveries {
        let body = template.replace("\"evt_", &format!("\"fresh{k}_"));
        let n = body.lines().filter(|l| !l.trim().is_empty()).count() as i64;
        let tmp = landing.join(format!("usage_events_stream/.fresh_{k:03}.jsonl"));
        std::fs::write(&tmp, body).expect("write");
        let t0 = Instant::now();
        std::fs::rename(&tmp, landing.join(format!("usage_events_stream/fresh_{k:03}.jsonl")))
            .expect("rename");
        let file = format!("fresh_{k:03}.jsonl");
        loop {
            if reader.visible(&file, n).await {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "delivery {k} not visible after 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    latencies
}

struct Broker {
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

struct Throughput {
    events: u64,
    produce: Duration,
    wall: Duration,
    peak_rss: u64,
    rss_quarters: Vec<u64>,
}

/// How the Kafka part shapes its data and state: `generate --days N --in-order` when `days`,
/// and `[stream] state_memory_mb` when `state_mb`.
struct Feed {
    days: Option<u32>,
    state_mb: Option<u64>,
}

fn kafka_throughput(scratch: &Path, scale: u32, feed: &Feed) -> Throughput {
    let (_broker, brokers) = match std::env::var("CLOUDLAKE_BENCH_KAFKA") {
        Ok(b) => (None, b),
        Err(_) => {
            let dir = scratch.join("kafka");
            let port = free_port();
            let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
                .args(["start", dir.to_str().unwrap()])
                .env("KAFKA_PORT", port.to_string())
                .env("KAFKA_CONTROLLER_PORT", free_port().to_string())
                .status()
                .expect("scripts/kafka.sh");
            assert!(status.success(), "could not start Kafka");
            (Some(Broker { dir }), format!("127.0.0.1:{port}"))
        }
    };
    let data = scratch.join("generated");
    let mut generate =
        cloudlake(&["generate", "--scale", &scale.to_string(), "--out", data.to_str().unwrap()]);
    if let Some(days) = feed.days {
        generate.args(["--days", &days.to_string(), "--in-order"]);
    }
    ok(&mut generate);
    let config = scratch.join("stream.toml");
    let state = feed.state_mb.map(|mb| format!("[stream]\nstate_memory_mb = {mb}\n")).unwrap_or_default();
    std::fs::write(&config, state).expect("config");
    let lake = scratch.join("kafka_lake");
    // Masters from the generated data, events from Kafka only.
    let masters = scratch.join("generated_masters");
    std::fs::create_dir_all(masters.join("usage_events_stream")).expect("mkdir");
    for entry in std::fs::read_dir(&data).expect("generated") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            std::fs::copy(&p, masters.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    ok(&mut cloudlake(&[
        "run",
        "-q",
        "--landing",
        masters.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]));
    let topic = format!("bench_{}", std::process::id());
    let t0 = Instant::now();
    ok(cloudlake(&["produce", "--kafka", &brokers, "--topic", &topic, "--partitions", "2", "--landing"])
        .arg(&data));
    let produce = t0.elapsed();

    let t0 = Instant::now();
    let mut child =
        cloudlake(&["stream", "--once", "-q", "--json", "--kafka", &brokers, "--topic", &topic, "--lake"])
            .arg(&lake)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn stream");
    let mut samples = Vec::new();
    while child.try_wait().expect("wait").is_none() {
        if let Some(r) = rss_bytes(child.id()) {
            samples.push(r);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let wall = t0.elapsed();
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "stream failed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stream report");
    let events = report["totals"]["bronze"]["read"].as_u64().unwrap_or(0);
    let q = samples.len().div_ceil(4);
    let rss_quarters = samples.chunks(q.max(1)).map(|c| c.iter().copied().max().unwrap_or(0)).collect();
    Throughput { events, produce, wall, peak_rss: samples.iter().copied().max().unwrap_or(0), rss_quarters }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("stream benchmark: run it with `cargo bench --bench stream`");
        return;
    }
    let deliveries: usize =
        std::env::var("CLOUDLAKE_BENCH_DELIVERIES").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let scale: u32 = std::env::var("CLOUDLAKE_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let feed = Feed {
        days: env("CLOUDLAKE_BENCH_DAYS").map(|d| d as u32),
        state_mb: env("CLOUDLAKE_BENCH_STATE_MB"),
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let latencies = if deliveries > 0 { rt.block_on(freshness(scratch.path(), deliveries)) } else { vec![] };
    let t = kafka_throughput(scratch.path(), scale, &feed);
    let mb = |b: u64| b as f64 / 1024.0 / 1024.0;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let eps = t.events as f64 / t.wall.as_secs_f64();
    println!(
        "\ncloudlake stream benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| measure | value |\n|---|---|");
    if !latencies.is_empty() {
        println!(
            "| freshness, file -> silver + gold (500 ms trigger, {} deliveries) | p50 {:.0} ms, max {:.0} ms |",
            latencies.len(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 1.0))
        );
    }
    let shape = match feed.days {
        Some(days) => format!("scale {scale}, a live feed of {days} days"),
        None => format!("scale {scale}"),
    };
    let state = feed.state_mb.map(|mb| format!(", state_memory_mb {mb}")).unwrap_or_default();
    println!("| Kafka: events ({shape}{state}) | {} |", t.events);
    println!(
        "| Kafka: produce | {:.1} s ({:.0} msg/s) |",
        t.produce.as_secs_f64(),
        t.events as f64 / t.produce.as_secs_f64()
    );
    println!(
        "| Kafka: stream --once, bronze + silver + gold | {:.1} s, **{:.0} events/s** |",
        t.wall.as_secs_f64(),
        eps
    );
    println!(
        "| Kafka: peak RSS (per quarter of the run) | {:.0} MB ({}) |",
        mb(t.peak_rss),
        t.rss_quarters.iter().map(|r| format!("{:.0}", mb(*r))).collect::<Vec<_>>().join(" / ")
    );
    let json = serde_json::json!({
        "freshness_ms": latencies.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "kafka": { "scale": scale, "days": feed.days, "state_memory_mb": feed.state_mb, "events": t.events, "produce_s": t.produce.as_secs_f64(),
                   "stream_s": t.wall.as_secs_f64(), "events_per_s": eps,
                   "peak_rss_mb": mb(t.peak_rss), "rss_quarters_mb": t.rss_quarters.iter().map(|r| mb(*r)).collect::<Vec<_>>() },
    });
    let dir =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())).join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("stream.json"), serde_json::to_vec_pretty(&json).unwrap_or_default());
}
