//! Serving benchmark: publishing the gold marts to a real Cassandra node, and the latency of the
//! five queries from Cassandra and from the lake.
//!
//! `cargo bench --bench serving` builds the bundled data's lake once (a `cloudlake run` into a
//! scratch folder), then:
//! - publishes it to a fresh keyspace (every row new), then again (nothing changed), each timed
//!   as the `cloudlake publish` process end to end;
//! - runs each query `CLOUDLAKE_BENCH_QUERIES` times (default 300) in process, cycling over the
//!   orgs, on both backends, and prints p50 / p99 / mean latency.
//!
//! The node is `CLOUDLAKE_BENCH_CASSANDRA` (`host:port`) when set; otherwise the benchmark
//! starts its own with `scripts/cassandra.sh` (scratch folder, free ports) and stops it at the
//! end. Figures go to `$CARGO_TARGET_DIR/bench/serving.json` as well.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cloudlake::lake::Lake;
use cloudlake::serving::cassandra::{Cassandra, CassandraConfig};
use cloudlake::serving::{QueryName, QueryParams};

struct OwnNode {
    dir: tempfile::TempDir,
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", self.dir.path().to_str().unwrap_or_default()]).status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cassandra.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn publish_process(lake: &Path, config: &Path) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cloudlake"))
        .args(["publish", "--json", "--quiet", "--lake"])
        .arg(lake)
        .arg("--config")
        .arg(config)
        .env("CLOUDLAKE_LOG", "warn")
        .output()
        .expect("spawn cloudlake publish");
    let wall = started.elapsed();
    assert!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));
    (wall, serde_json::from_slice(&out.stdout).expect("publish report"))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("serving benchmark: run it with `cargo bench --bench serving`");
        return;
    }
    let iterations: usize =
        std::env::var("CLOUDLAKE_BENCH_QUERIES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let scratch = tempfile::tempdir().expect("tempdir");
    let (node, _own) = match std::env::var("CLOUDLAKE_BENCH_CASSANDRA") {
        Ok(node) => (node, None),
        Err(_) => {
            let own = OwnNode { dir: tempfile::tempdir().expect("tempdir") };
            let port = free_port();
            let ok = Command::new(script())
                .args(["start", own.dir.path().to_str().expect("utf-8 path")])
                .env("CASSANDRA_PORT", port.to_string())
                .env("CASSANDRA_STORAGE_PORT", free_port().to_string())
                .status()
                .expect("scripts/cassandra.sh")
                .success();
            assert!(ok, "could not start Cassandra");
            (format!("127.0.0.1:{port}"), Some(own))
        }
    };

    let lake_dir = scratch.path().join("lake");
    let landing = Path::new(env!("CARGO_MANIFEST_DIR")).join("datalake/landing");
    let status = Command::new(env!("CARGO_BIN_EXE_cloudlake"))
        .args(["run", "--quiet", "--landing"])
        .arg(&landing)
        .arg("--lake")
        .arg(&lake_dir)
        .env("CLOUDLAKE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cloudlake run");
    assert!(status.success(), "cloudlake run failed");

    let keyspace = format!("bench_{}", std::process::id());
    let config_file = scratch.path().join("cloudlake.toml");
    std::fs::write(
        &config_file,
        format!("[cassandra]\ncontact_points = [\"{node}\"]\nkeyspace = \"{keyspace}\"\n"),
    )
    .expect("config");
    let (cold, cold_report) = publish_process(&lake_dir, &config_file);
    let (warm, warm_report) = publish_process(&lake_dir, &config_file);
    let rows = |r: &serde_json::Value, key: &str| -> u64 {
        r["tables"].as_array().map(|t| t.iter().map(|x| x[key].as_u64().unwrap_or(0)).sum()).unwrap_or(0)
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let lake = Lake::new(&lake_dir).expect("lake");
    let config = CassandraConfig { contact_points: vec![node.clone()], keyspace, ..Default::default() };
    let latencies = runtime.block_on(async {
        let c = Cassandra::connect(&config).await.expect("connect");
        let orgs_csv = cloudlake::sql::query(&lake, "SELECT org_id FROM gold_org_health ORDER BY org_id")
            .await
            .expect("orgs");
        let mut orgs = Vec::new();
        for b in &orgs_csv {
            let col =
                datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8)
                    .expect("cast");
            let col = col.as_any().downcast_ref::<datafusion::arrow::array::StringArray>().expect("strings");
            orgs.extend(col.iter().flatten().map(str::to_string));
        }
        let mut out = Vec::new();
        for name in QueryName::ALL {
            for backend in ["cassandra", "lake"] {
                // The lake backend plans SQL over Delta per call: fewer iterations keep it short.
                let n = if backend == "lake" { iterations.min(60) } else { iterations };
                let mut samples = Vec::with_capacity(n);
                for i in 0..n {
                    let params =
                        QueryParams { org: Some(orgs[i % orgs.len()].clone()), ..Default::default() };
                    let started = Instant::now();
                    let batches = if backend == "cassandra" {
                        cloudlake::serving::cassandra::query::query(&c, name, &params).await
                    } else {
                        cloudlake::serving::lake::query(&lake, name, &params).await
                    }
                    .expect("query");
                    samples.push(started.elapsed());
                    std::hint::black_box(batches);
                }
                samples.sort();
                out.push((name, backend, samples));
            }
        }
        out
    });

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("cloudlake serving on the bundled data, Cassandra node {node}");
    let secs = |r: &serde_json::Value| r["seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "publish, first (every row new; keyspace created): {:.2} s process, {:.2} s publishing ({} rows written)",
        cold.as_secs_f64(),
        secs(&cold_report),
        rows(&cold_report, "written")
    );
    println!(
        "publish, again (nothing changed):                {:.2} s process, {:.2} s publishing ({} rows written, {} deleted)",
        warm.as_secs_f64(),
        secs(&warm_report),
        rows(&warm_report, "written"),
        rows(&warm_report, "deleted")
    );
    println!("{:<18} {:<10} {:>6} {:>9} {:>9} {:>9}", "query", "backend", "n", "p50 ms", "p99 ms", "mean ms");
    let mut json_queries = Vec::new();
    for (name, backend, samples) in &latencies {
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        println!(
            "{:<18} {:<10} {:>6} {:>9.2} {:>9.2} {:>9.2}",
            name.as_str(),
            backend,
            samples.len(),
            ms(p50),
            ms(p99),
            ms(mean)
        );
        json_queries.push(serde_json::json!({
            "query": name.as_str(), "backend": backend, "n": samples.len(),
            "p50_ms": ms(p50), "p99_ms": ms(p99), "mean_ms": ms(mean),
        }));
    }
    let json = serde_json::json!({
        "publish_first_s": cold.as_secs_f64(),
        "publish_first_publishing_s": secs(&cold_report),
        "publish_again_publishing_s": secs(&warm_report),
        "publish_first_written": rows(&cold_report, "written"),
        "publish_again_s": warm.as_secs_f64(),
        "publish_again_written": rows(&warm_report, "written"),
        "queries": json_queries,
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let out = target.join("bench");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("serving.json"), serde_json::to_vec_pretty(&json).expect("json"));
    }
}
