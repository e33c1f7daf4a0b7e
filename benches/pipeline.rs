//! End-to-end benchmark of `cloudlake run` (prep once, then measure only).
//!
//! `cargo bench --bench pipeline` builds the release binary and runs it on the bundled landing
//! data (or `CLOUDLAKE_BENCH_LANDING`): a cold run into an empty lake, `CLOUDLAKE_BENCH_RUNS`
//! times (default 5), then a warm re-run over the same input (everything is a duplicate). Each
//! run is a separate process, so wall time includes start-up and the peak resident memory is
//! the process's own (`wait4` rusage). Prints a table and writes the figures as JSON to
//! `$CARGO_TARGET_DIR/bench/pipeline.json` for comparison across commits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Sample {
    wall: Duration,
    peak_rss_bytes: u64,
}

// The child is reaped by `wait4` below, which also gives its own peak RSS (`Child::wait` cannot).
#[allow(clippy::zombie_processes)]
fn run_once(landing: &Path, lake: &Path) -> Sample {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_cloudlake"))
        .args(["run", "--quiet", "--landing"])
        .arg(landing)
        .arg("--lake")
        .arg(lake)
        .env("CLOUDLAKE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn cloudlake");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data, zero is a valid value, and `wait4` fills it for our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child we spawned; the pointers are valid for the call.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "cloudlake run failed");
    Sample { wall, peak_rss_bytes: usage.ru_maxrss as u64 * 1024 }
}

fn count_events(landing: &Path) -> u64 {
    let dir = landing.join("usage_events_stream");
    std::fs::read_dir(&dir)
        .expect("usage_events_stream")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| {
            std::fs::read(p).expect("read").split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as u64
        })
        .sum()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too (without `--bench`): building is the test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline benchmark: run it with `cargo bench --bench pipeline`");
        return;
    }
    let landing = std::env::var_os("CLOUDLAKE_BENCH_LANDING")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("datalake/landing"));
    let runs: usize = std::env::var("CLOUDLAKE_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let events = count_events(&landing);
    let scratch = tempfile::tempdir().expect("tempdir");

    let mut cold = Vec::new();
    let mut peak = 0;
    for i in 0..runs {
        let lake = scratch.path().join(format!("lake{i}"));
        let s = run_once(&landing, &lake);
        peak = peak.max(s.peak_rss_bytes);
        cold.push(s.wall);
    }
    let warm = run_once(&landing, &scratch.path().join("lake0"));

    let cold_median = median(cold.clone());
    let cold_best = *cold.iter().min().expect("at least one run");
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let eps = events as f64 / cold_median.as_secs_f64();
    println!("cloudlake run on {} ({} events, {} cold runs)", landing.display(), events, runs);
    println!(
        "{:<28} {:>10} {:>10} {:>14} {:>12}",
        "scenario", "median s", "best s", "events/s", "peak RSS MB"
    );
    println!(
        "{:<28} {:>10.3} {:>10.3} {:>14.0} {:>12.1}",
        "cold (empty lake)",
        cold_median.as_secs_f64(),
        cold_best.as_secs_f64(),
        eps,
        mb(peak)
    );
    println!(
        "{:<28} {:>10.3} {:>10.3} {:>14.0} {:>12.1}",
        "warm re-run (all duplicates)",
        warm.wall.as_secs_f64(),
        warm.wall.as_secs_f64(),
        events as f64 / warm.wall.as_secs_f64(),
        mb(warm.peak_rss_bytes)
    );
    let json = serde_json::json!({
        "landing": landing,
        "events": events,
        "runs": runs,
        "cold_median_s": cold_median.as_secs_f64(),
        "cold_best_s": cold_best.as_secs_f64(),
        "cold_events_per_s": eps,
        "cold_peak_rss_mb": mb(peak),
        "warm_s": warm.wall.as_secs_f64(),
        "warm_peak_rss_mb": mb(warm.peak_rss_bytes),
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let out = target.join("bench");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join("pipeline.json"), serde_json::to_vec_pretty(&json).expect("json"));
    }
}
