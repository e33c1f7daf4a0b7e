//! Streaming: micro-batches over files equal a batch run, late and duplicate events, crash
//! recovery under SIGKILL at random instants.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cloudlake::config::Settings;
use cloudlake::stream::{self, StreamOptions, StreamReport, StreamSource};

use crate::gold::dump_gold;
use crate::{assert_same_text, copy_dir, real_landing, run, sql_i64, sql_text};

/// A landing copy with the masters and the first `n` real event files; the others are returned
/// in order, for the test to deliver later.
pub(crate) fn landing_with_events(dest: &Path, n: usize) -> Vec<PathBuf> {
    copy_dir(&real_landing(), dest);
    let ev = dest.join("usage_events_stream");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ev).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let held = dest.join("../held").join(dest.file_name().unwrap());
    std::fs::create_dir_all(&held).unwrap();
    let mut later = Vec::new();
    for f in files.into_iter().skip(n) {
        let to = held.join(f.file_name().unwrap());
        std::fs::rename(&f, &to).unwrap();
        later.push(to);
    }
    later
}

pub(crate) fn settings(landing: &Path, lake: &Path, batch_bytes: u64) -> Settings {
    let mut s = Settings::resolve(Some(landing.into()), Some(lake.into()), Default::default()).unwrap();
    s.batch_bytes = batch_bytes;
    s.stream.file_settle = Duration::ZERO;
    s
}

pub(crate) async fn stream_once(settings: &Settings, source: &StreamSource) -> StreamReport {
    let options = StreamOptions { once: true, ..Default::default() };
    stream::run(settings, source, &options, &|_| {}).await.unwrap()
}

/// Silver events without the columns that name the micro-batch (ingest ids and instants), and
/// the daily features.
pub(crate) async fn dump_silver(lake: &Path) -> String {
    dump_silver_excluding(lake, "").await
}

/// [`dump_silver`] without more columns (e.g. lineage, which differs between files and Kafka).
pub(crate) async fn dump_silver_excluding(lake: &Path, more: &str) -> String {
    let mut s = sql_text(
        lake,
        &format!(
            "SELECT * EXCLUDE (ingest_run_id, dq_flags{more}) FROM silver_usage_events ORDER BY event_id"
        ),
    )
    .await;
    s += &sql_text(lake, "SELECT * FROM silver_usage_daily ORDER BY org_id, usage_date, service").await;
    s
}

#[tokio::test]
async fn micro_batches_over_unordered_files_equal_one_batch_run() {
    // Masters first (a run with no event file yet), then the 120 real files as ~2 MB batches:
    // every file spans the whole 60 days, so after the first batch almost every event is late.
    let root = tempfile::tempdir().unwrap();
    let landing = root.path().join("landing");
    let later = landing_with_events(&landing, 0);
    let lake = root.path().join("lake");
    run(&landing, &lake).await.unwrap();
    for f in &later {
        std::fs::rename(f, landing.join("usage_events_stream").join(f.file_name().unwrap())).unwrap();
    }
    let s = settings(&landing, &lake, 2 * 1024 * 1024);
    let r = stream_once(&s, &StreamSource::Files).await;
    assert!(r.batches >= 6, "{r:?}");
    let t = &r.totals;
    assert_eq!(
        (t.bronze.files, t.bronze.read, t.bronze.written, t.bronze.duplicates),
        (120, 43_200, 43_200, 0)
    );
    assert!(t.bronze.conserved());
    // With the default lateness (1 day), later batches are almost all late: every one lands
    // and corrects its day.
    assert!(t.late_events > 30_000, "{t:?}");
    assert!(t.corrected_keys > 5_000, "{t:?}");
    assert!(t.max_lateness_s > 50 * 86_400, "{t:?}");
    assert_eq!(t.silver.rows + t.silver.quarantined, t.silver.bronze_rows);
    assert_eq!(r.watermark.as_deref(), Some("2025-08-30T23:58:00Z"));

    // The same tables as one batch run over the same files.
    let reference = root.path().join("reference");
    run(&real_landing(), &reference).await.unwrap();
    assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
    assert_same_text(&dump_silver(&lake).await, &dump_silver(&reference).await);

    // Nothing new: no batch, nothing written.
    let again = stream_once(&s, &StreamSource::Files).await;
    assert_eq!((again.batches, again.totals.bronze.read), (0, 0));
}

#[tokio::test]
async fn a_backfill_left_in_bronze_is_rebuilt_by_the_next_stream_or_run() {
    // What `run --ballista` does before its rebuild: the events land in bronze only. Here the
    // process "dies" right after, and the next stream (or run) must rebuild silver and gold.
    let root = tempfile::tempdir().unwrap();
    let reference = root.path().join("reference");
    run(&real_landing(), &reference).await.unwrap();
    for next in ["stream", "run"] {
        let landing = root.path().join(format!("landing-{next}"));
        let later = landing_with_events(&landing, 0);
        let lake = root.path().join(format!("lake-{next}"));
        run(&landing, &lake).await.unwrap();
        for f in &later {
            std::fs::rename(f, landing.join("usage_events_stream").join(f.file_name().unwrap())).unwrap();
        }
        let s = settings(&landing, &lake, 2 * 1024 * 1024);
        let backfill = StreamOptions { once: true, bronze_only: true, ..Default::default() };
        let r = stream::run(&s, &StreamSource::Files, &backfill, &|_| {}).await.unwrap();
        assert!(r.batches >= 6, "{r:?}");
        assert_eq!((r.totals.bronze.read, r.totals.bronze.written), (43_200, 43_200));
        let l = cloudlake::lake::Lake::new(&lake).unwrap();
        assert!(stream::rebuild_pending(&l));
        assert_eq!(sql_i64(&lake, "SELECT count(*) FROM bronze_usage_events").await, 43_200);
        assert_eq!(sql_i64(&lake, "SELECT count(*) FROM silver_usage_events").await, 0);

        if next == "stream" {
            let r = stream_once(&s, &StreamSource::Files).await;
            assert_eq!((r.batches, r.totals.bronze.read), (0, 0), "{r:?}");
        } else {
            let r = run(&landing, &lake).await.unwrap();
            assert!(r.gold.iter().all(|g| g.refresh == "full"), "{:?}", r.gold);
        }
        assert!(!stream::rebuild_pending(&l));
        assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
        assert_same_text(&dump_silver(&lake).await, &dump_silver(&reference).await);
        // And the stream goes on from there: nothing is applied twice.
        let again = stream_once(&s, &StreamSource::Files).await;
        assert_eq!((again.batches, again.recovered), (0, 0));
        assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
    }

    // A run whose new event files fill several batches and outweigh what the lake read backfills
    // by itself; a small increment afterwards goes batch by batch.
    let landing = root.path().join("landing-auto");
    let later = landing_with_events(&landing, 0);
    let lake = root.path().join("lake-auto");
    run(&landing, &lake).await.unwrap();
    for f in &later[..110] {
        std::fs::rename(f, landing.join("usage_events_stream").join(f.file_name().unwrap())).unwrap();
    }
    let s = settings(&landing, &lake, 1024 * 1024);
    let r = cloudlake::pipeline::run(&s, &cloudlake::telemetry::Progress::new(0, false)).await.unwrap();
    let streamed = r.stream.as_ref().unwrap();
    assert!(streamed.batches >= 4 && streamed.totals.silver.rows == 0, "{streamed:?}");
    assert!(r.gold.iter().all(|g| g.refresh == "full"), "{:?}", r.gold);
    for f in &later[110..] {
        std::fs::rename(f, landing.join("usage_events_stream").join(f.file_name().unwrap())).unwrap();
    }
    let r = cloudlake::pipeline::run(&s, &cloudlake::telemetry::Progress::new(0, false)).await.unwrap();
    let streamed = r.stream.as_ref().unwrap();
    assert!(streamed.batches >= 1 && streamed.totals.silver.rows > 0, "{streamed:?}");
    assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
    assert_same_text(&dump_silver(&lake).await, &dump_silver(&reference).await);
}

#[tokio::test]
async fn a_stream_within_a_small_memory_budget_lets_old_days_go_and_equals_a_batch_run() {
    // 240 days of events in time order (a live feed, some events late), then 300 of the first
    // days' events delivered again: by then those days are held only in the lake.
    let root = tempfile::tempdir().unwrap();
    let landing = root.path().join("landing");
    let period = cloudlake::generate::Period { days: 240, in_order: true };
    cloudlake::generate::generate_over(1, &landing, 5, period).unwrap();
    let ev = landing.join("usage_events_stream");
    let first = std::fs::read_to_string(ev.join("events_part_0000.jsonl")).unwrap();
    let again: String = first.lines().take(300).map(|l| format!("{l}\n")).collect();
    let aside = root.path().join("aside");
    std::fs::rename(&ev, &aside).unwrap();
    std::fs::create_dir_all(&ev).unwrap();
    let lake = root.path().join("lake");
    run(&landing, &lake).await.unwrap();
    std::fs::remove_dir(&ev).unwrap();
    std::fs::rename(&aside, &ev).unwrap();
    std::fs::write(ev.join("events_part_9999_again.jsonl"), again).unwrap();

    let mut s = settings(&landing, &lake, 4 * 1024 * 1024);
    s.stream.state_memory = 1 << 20;
    // Gold may lag for an hour, but the budget forces gold steps (only written dates can go).
    s.stream.gold_lag = Duration::from_secs(3600);
    let r = stream_once(&s, &StreamSource::Files).await;
    let t = &r.totals;
    assert!(r.batches >= 8, "{r:?}");
    assert!(r.gold_steps >= r.batches / 2, "{r:?}");
    assert_eq!((t.bronze.read, t.bronze.written, t.bronze.duplicates), (173_100, 172_800, 300));
    // About 1 MB holds a few weeks of ids and daily rows: the first months were let go.
    let held_from = r.held_from.clone().expect("old dates were let go");
    assert!(held_from.as_str() > "2025-12-01" && held_from.as_str() < "2026-02-28", "{held_from}");
    assert!(t.late_events > 300, "{t:?}");

    // The same tables as one batch run over the same files.
    let reference = root.path().join("reference");
    run(&landing, &reference).await.unwrap();
    assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
    let daily = "SELECT * FROM silver_usage_daily ORDER BY org_id, usage_date, service";
    assert_same_text(&sql_text(&lake, daily).await, &sql_text(&reference, daily).await);
    let events =
        "SELECT count(*), count(DISTINCT event_id), CAST(sum(cost_usd) AS VARCHAR) FROM silver_usage_events";
    assert_same_text(&sql_text(&lake, events).await, &sql_text(&reference, events).await);
}

fn event(id: &str, ts: &str, cost: &str) -> String {
    format!(
        "{{\"event_id\": \"{id}\", \"timestamp\": {ts}, \"org_id\": \"org_cvs4f8cg\", \"resource_id\": \"res_i8kcmm7d\", \
         \"service\": \"networking\", \"region\": \"sa-east\", \"metric\": \"requests\", \"value\": 1, \"unit\": \"count\", \
         \"cost_usd_increment\": {cost}, \"schema_version\": 2, \"carbon_kg\": 0}}\n"
    )
}

#[tokio::test]
async fn late_and_duplicate_events_are_exact_whatever_the_lateness() {
    let root = tempfile::tempdir().unwrap();
    let landing = root.path().join("landing");
    landing_with_events(&landing, 0);
    let lake = root.path().join("lake");
    run(&landing, &lake).await.unwrap();
    let ev = landing.join("usage_events_stream");
    let mut s = settings(&landing, &lake, 1);
    s.stream.allowed_lateness = Duration::from_secs(3600);

    // Batch 1: three events on 2025-08-20 (watermark becomes 11:00 that day).
    let a = [
        event("late_a1", "\"2025-08-20T10:00:00Z\"", "1.25"),
        event("late_a2", "\"2025-08-20T11:00:00Z\"", "2.50"),
        event("late_a3", "\"2025-08-20T12:00:00Z\"", "3.75"),
    ];
    std::fs::write(ev.join("a.jsonl"), a.concat()).unwrap();
    let r1 = stream_once(&s, &StreamSource::Files).await;
    assert_eq!((r1.totals.bronze.written, r1.totals.late_events), (3, 0));

    // Batch 2: an on-time duplicate (in memory), a late duplicate written another way (epoch
    // millis: found in bronze), a duplicate within the batch, an event 10 days late, one a
    // minute late, and a malformed line.
    let b = [
        event("late_a3", "\"2025-08-20T12:00:00Z\"", "3.75"),
        event("late_a1", "1755684000000", "1.25"),
        event("late_b1", "\"2025-08-10T08:00:00Z\"", "0.10"),
        event("late_b1", "\"2025-08-10T08:00:00Z\"", "0.10"),
        event("late_b2", "\"2025-08-20T10:59:00Z\"", "0.20"),
        "{\"event_id\": \"broken\", \n".to_string(),
        event("late_b3", "\"2025-08-20T11:30:00Z\"", "0.30"),
    ];
    std::fs::write(ev.join("b.jsonl"), b.concat()).unwrap();
    let r2 = stream_once(&s, &StreamSource::Files).await;
    let t = &r2.totals;
    assert_eq!((t.bronze.read, t.bronze.written, t.bronze.duplicates, t.bronze.quarantined), (7, 3, 3, 1));
    assert_eq!(t.late_events, 2, "b1 (10 days) and b2 (a minute past the watermark)");
    assert_eq!(t.corrected_keys, 2, "2025-08-10 and 2025-08-20 for the org's networking");
    assert!(t.max_lateness_s >= 10 * 86_400 && t.max_lateness_s < 11 * 86_400, "{t:?}");

    // Each event once in bronze and silver; the late ones are in the marts.
    assert_eq!(
        sql_i64(&lake, "SELECT count(*) FROM bronze_usage_events WHERE event_id LIKE 'late_%'").await,
        6
    );
    assert_eq!(
        sql_i64(
            &lake,
            "SELECT count(DISTINCT event_id) FROM silver_usage_events WHERE event_id LIKE 'late_%'"
        )
        .await,
        6
    );
    assert_eq!(
        sql_i64(
            &lake,
            "SELECT count(*) FROM quarantine_usage_events WHERE rule_id = 'bronze.malformed_json'"
        )
        .await,
        1
    );
    // Gold equals a batch run over the same two files.
    let reference = root.path().join("reference");
    run(&landing, &reference).await.unwrap();
    assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
    assert_eq!(
        sql_i64(
            &lake,
            "SELECT CAST(cost_usd * 100 AS BIGINT) FROM gold_org_daily_usage_by_service
             WHERE org_id = 'org_cvs4f8cg' AND usage_date = DATE '2025-08-10' AND service = 'networking'"
        )
        .await,
        10
    );
}

/// Starts `cloudlake stream`; its warnings are appended to `log`.
fn spawn_stream(landing: &Path, lake: &Path, config: &Path, once: bool, log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudlake"));
    cmd.arg("stream")
        .arg("--landing")
        .arg(landing)
        .arg("--lake")
        .arg(lake)
        .arg("--config")
        .arg(config)
        .arg("-q");
    if once {
        cmd.arg("--once");
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.env("CLOUDLAKE_LOG", "warn").stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_instants_loses_and_duplicates_nothing() {
    // 40 files or more (14,400 events and up, some duplicated by a replayed file) in ~1 MB
    // batches; the stream process is killed with SIGKILL at random instants (reading, writing
    // bronze, silver, gold, or the checkpoint), restarted each time, then run to the end.
    let root = tempfile::tempdir().unwrap();
    let landing = root.path().join("landing");
    landing_with_events(&landing, 0);
    let lake = root.path().join("lake");
    run(&landing, &lake).await.unwrap();
    // The lake before any stream, from which the reference is made at the end.
    let base = root.path().join("base");
    copy_dir(&lake, &base);
    let ev = landing.join("usage_events_stream");
    let mut files: Vec<PathBuf> = std::fs::read_dir(real_landing().join("usage_events_stream"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut delivered = 0;
    let mut deliver = |n: usize| {
        for f in files.iter().skip(delivered).take(n) {
            std::fs::copy(f, ev.join(f.file_name().unwrap())).unwrap();
            delivered += 1;
        }
        delivered
    };
    deliver(40);
    std::fs::copy(ev.join("events_part_0003.jsonl"), ev.join("replay_of_0003.jsonl")).unwrap();
    std::fs::write(ev.join("zz_malformed.jsonl"), "{not json\n").unwrap();
    let config = root.path().join("cloudlake.toml");
    std::fs::write(&config, "batch_mb = 1\n[stream]\nfile_settle = \"0s\"\ntrigger = \"100ms\"\n").unwrap();

    let log = root.path().join("stream.log");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = |lo: u64, hi: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lo + seed % (hi - lo)
    };
    let mut kills = 0;
    let started = Instant::now();
    // At least 24 kills, and more (up to 80) until some landed in each window the test is about:
    // after a bronze commit, and before a gold step (random instants on a loaded machine can miss
    // one in 24). Once the stream has caught up a kill can land in neither, so each extra process
    // is first given three more files (about one batch), while the real landing has some.
    let covered = |log: &Path| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.contains("Finishing a micro-batch interrupted after its bronze commit")
            && text.contains("Bringing gold up to date with batches a stop interrupted")
    };
    while kills < 24 || (kills < 80 && !covered(&log)) {
        if kills >= 24 {
            deliver(3);
        }
        let mut child = spawn_stream(&landing, &lake, &config, false, &log);
        std::thread::sleep(Duration::from_millis(rand(150, 2500)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    let delivered = deliver(0) as i64;
    let last = spawn_stream(&landing, &lake, &config, true, &log).wait().unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    let tail = &log_text[log_text.len().saturating_sub(3000)..];
    assert!(last.success(), "the last stream process failed; log tail:\n{tail}");
    // Reference: one uninterrupted process over the same files.
    let reference = root.path().join("reference");
    copy_dir(&base, &reference);
    let reference_log = root.path().join("reference.log");
    assert!(spawn_stream(&landing, &reference, &config, true, &reference_log).wait().unwrap().success());
    // Some kills landed between a batch's bronze commit and its silver one, and the next
    // process finished that batch (each downstream table skipping it if already applied).
    let log = std::fs::read_to_string(&log).unwrap();
    let finished = log.matches("Finishing a micro-batch interrupted after its bronze commit").count();
    // Batches are 1 MB of 14 MB, so the stream is behind and several batches share a gold
    // step: kills landed before it, and the next process brought gold up to date from silver.
    let caught_up = log.matches("Bringing gold up to date with batches a stop interrupted").count();
    eprintln!(
        "{kills} SIGKILLs in {:?} over {delivered} files; {finished} batches finished, {caught_up} gold steps caught up after a kill",
        started.elapsed()
    );
    assert!(finished >= 1, "no kill landed after a bronze commit; log:\n{log}");
    assert!(caught_up >= 1, "no kill landed before a gold step; log:\n{log}");

    let count = |lake: PathBuf, q: &'static str| async move { sql_i64(&lake, q).await };
    // Each real file holds 360 distinct events; the replayed file adds none.
    assert_eq!(count(lake.clone(), "SELECT count(*) FROM bronze_usage_events").await, 360 * delivered);
    assert_eq!(
        count(lake.clone(), "SELECT count(DISTINCT event_id) FROM bronze_usage_events").await,
        360 * delivered
    );
    assert_eq!(
        count(lake.clone(), "SELECT count(*) FROM silver_usage_events").await,
        count(reference.clone(), "SELECT count(*) FROM silver_usage_events").await
    );
    assert_eq!(
        count(lake.clone(), "SELECT count(*) FROM quarantine_usage_events").await,
        count(reference.clone(), "SELECT count(*) FROM quarantine_usage_events").await
    );
    assert_same_text(&dump_silver(&lake).await, &dump_silver(&reference).await);
    assert_same_text(&dump_gold(&lake).await, &dump_gold(&reference).await);
}
