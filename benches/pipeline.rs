//! End-to-end benchmark of `cloudlake run` (prep once, then measure only).
//!
//! `cargo bench --bench pipeline` builds the release binary and runs it on the bundled landing
//! data (or `CLOUDLAKE_BENCH_LANDING`): a cold run into an empty lake, `CLOUDLAKE_BENCH_RUNS`
//! times (default 5), then a warm re-run over the same input (everything is a duplicate). Each
//! run is a separate process, so wall time includes start-up and the peak resident memory is
//! the process's own (`wait4` rusage). Prints a table and writes the figures as JSON to
//! `$CARGO_TARGET_DIR/bench/pipeline.json` for comparison across commits.
//!
//! `CLOUDLAKE_BENCH_SCALES=1,10,100` measures scales instead: for each N, `cloudlake generate
//! --scale N` (timed, so the generator's MB/s is reported too), then `CLOUDLAKE_BENCH_RUNS`
//! cold `run`s of it (default 3, each into a lake of its own), printed as one table: events,
//! median wall and CPU time, events/s at the median, and the highest peak memory per scale.
//! `CLOUDLAKE_BENCH_BIN` runs another cloudlake binary (an earlier build, to compare).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Sample {
    wall: Duration,
    /// CPU time, user and system: the work done, whatever the cores it was spread over.
    cpu: Duration,
    peak_rss_bytes: u64,
}

// The child is reaped by `wait4` below, which also gives its own peak RSS (`Child::wait` cannot).
#[allow(clippy::zombie_processes)]
fn run_once(landing: &Path, lake: &Path) -> Sample {
    let started = Instant::now();
    let child = Command::new(binary())
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
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    Sample { wall, cpu, peak_rss_bytes: usage.ru_maxrss as u64 * 1024 }
}

/// The binary measured: `CLOUDLAKE_BENCH_BIN`, else the one cargo built with this bench.
fn binary() -> PathBuf {
    std::env::var_os("CLOUDLAKE_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_cloudlake").into())
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

/// Median wall time, median CPU time and the highest peak RSS of some runs (at least one).
fn summary(runs: &[Sample]) -> (Duration, Duration, u64) {
    (
        median(runs.iter().map(|s| s.wall).collect()),
        median(runs.iter().map(|s| s.cpu).collect()),
        runs.iter().map(|s| s.peak_rss_bytes).max().unwrap_or(0),
    )
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too (without `--bench`): building is the test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline benchmark: run it with `cargo bench --bench pipeline`");
        return;
    }
    if let Ok(scales) = std::env::var("CLOUDLAKE_BENCH_SCALES") {
        let scales: Vec<u32> =
            scales.split(',').map(|s| s.trim().parse().expect("CLOUDLAKE_BENCH_SCALES: numbers")).collect();
        return by_scale(&scales);
    }
    let landing = std::env::var_os("CLOUDLAKE_BENCH_LANDING")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("datalake/landing"));
    let runs: usize = std::env::var("CLOUDLAKE_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let events = count_events(&landing);
    let scratch = tempfile::tempdir().expect("tempdir");

    let cold: Vec<Sample> =
        (0..runs).map(|i| run_once(&landing, &scratch.path().join(format!("lake{i}")))).collect();
    let warm = run_once(&landing, &scratch.path().join("lake0"));

    let (cold_median, cold_cpu, peak) = summary(&cold);
    let cold_best = cold.iter().map(|s| s.wall).min().expect("at least one run");
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let eps = events as f64 / cold_median.as_secs_f64();
    println!("cloudlake run on {} ({} events, {} cold runs)", landing.display(), events, runs);
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>14} {:>12}",
        "scenario", "median s", "best s", "CPU s", "events/s", "peak RSS MB"
    );
    println!(
        "{:<28} {:>10.3} {:>10.3} {:>10.2} {:>14.0} {:>12.1}",
        "cold (empty lake)",
        cold_median.as_secs_f64(),
        cold_best.as_secs_f64(),
        cold_cpu.as_secs_f64(),
        eps,
        mb(peak)
    );
    println!(
        "{:<28} {:>10.3} {:>10.3} {:>10.2} {:>14.0} {:>12.1}",
        "warm re-run (all duplicates)",
        warm.wall.as_secs_f64(),
        warm.wall.as_secs_f64(),
        warm.cpu.as_secs_f64(),
        events as f64 / warm.wall.as_secs_f64(),
        mb(warm.peak_rss_bytes)
    );
    let json = serde_json::json!({
        "landing": landing,
        "events": events,
        "runs": runs,
        "cold_median_s": cold_median.as_secs_f64(),
        "cold_best_s": cold_best.as_secs_f64(),
        "cold_cpu_s": cold_cpu.as_secs_f64(),
        "cold_events_per_s": eps,
        "cold_peak_rss_mb": mb(peak),
        "warm_s": warm.wall.as_secs_f64(),
        "warm_cpu_s": warm.cpu.as_secs_f64(),
        "warm_peak_rss_mb": mb(warm.peak_rss_bytes),
    });
    save("pipeline.json", &json);
}

/// Writes figures under `$CARGO_TARGET_DIR/bench/`.
fn save(name: &str, json: &serde_json::Value) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let out = target.join("bench");
    if std::fs::create_dir_all(&out).is_ok() {
        let _ = std::fs::write(out.join(name), serde_json::to_vec_pretty(json).expect("json"));
    }
}

/// Bytes of the files under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .map(|p| if p.is_dir() { bytes_under(&p) } else { std::fs::metadata(&p).expect("metadata").len() })
        .sum()
}

/// One table: for each scale, the generator's time and a cold `run` of its output.
fn by_scale(scales: &[u32]) {
    let runs: usize = std::env::var("CLOUDLAKE_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let scratch = tempfile::tempdir().expect("tempdir");
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "cloudlake run by scale: the median of {} cold runs each (wall, CPU), the highest peak",
        runs.max(1)
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "scale", "events", "JSONL MB", "gen MB/s", "run s", "CPU s", "events/s", "peak RSS MB"
    );
    let mut rows = Vec::new();
    for &scale in scales {
        let landing = scratch.path().join(format!("landing{scale}"));
        let started = Instant::now();
        let status = Command::new(binary())
            .args(["generate", "--quiet", "--seed", "42", "--scale", &scale.to_string(), "--out"])
            .arg(&landing)
            .env("CLOUDLAKE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("spawn cloudlake generate");
        let generated = started.elapsed();
        assert!(status.success(), "cloudlake generate failed");
        let events = count_events(&landing);
        let jsonl = bytes_under(&landing.join("usage_events_stream"));
        // Every scale is run several times: one run on this machine swings by 10 % or more.
        let n = runs.max(1);
        let samples: Vec<Sample> = (0..n)
            .map(|i| {
                let lake = scratch.path().join(format!("lake{scale}_{i}"));
                run_once(&landing, &lake)
            })
            .collect();
        let (wall, cpu, peak) = summary(&samples);
        let eps = events as f64 / wall.as_secs_f64();
        println!(
            "{:>6} {:>10} {:>10.1} {:>10.0} {:>10.2} {:>10.2} {:>12.0} {:>12.1}",
            scale,
            events,
            mb(jsonl),
            mb(jsonl) / generated.as_secs_f64(),
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            eps,
            mb(peak)
        );
        rows.push(serde_json::json!({
            "scale": scale, "events": events, "jsonl_mb": mb(jsonl),
            "generate_s": generated.as_secs_f64(), "run_s": wall.as_secs_f64(), "cpu_s": cpu.as_secs_f64(),
            "events_per_s": eps, "peak_rss_mb": mb(peak), "runs": n,
        }));
    }
    // Lakes and landings stay until every scale is measured (about 2.5 GB at scale 100), and
    // the bench deletes nothing before a run: ext4 without a journal (this machine's disk)
    // scans past every inode freed in the last minute or so for each file it creates, and a
    // run creates about 1,700 of them (1,500 files: 1.9 s right after a deletion, 0.09-0.16 s
    // a minute later). Deleting the previous scale's files put that scan into the next `run`'s
    // figures: 3.7 % of a profiled scale-100 run's CPU.
    drop(scratch);
    save("pipeline-scales.json", &serde_json::Value::Array(rows));
}
