//! Streaming: usage events in exactly-once micro-batches, from the landing event folder or a
//! Kafka topic (SPEC section 8). `cloudlake run` sends events through this same path (`--once`
//! over the files), so backfill and live share one code path.
//!
//! A micro-batch, numbered N:
//!
//! 1. **plan** its input: the next ready files ([`files`]), or exact offset ranges ([`kafka`]);
//! 2. **read** it with the explicit bronze schema; malformed records become rejects;
//! 3. **dedup** by event_id ([`state`]): within the batch, against recent ids in memory, and for
//!    late events against the hashes of every bronze id (bronze itself only on a hash hit);
//! 4. write its plan and state to the checkpoint ([`checkpoint`]), then **commit bronze** with the
//!    Delta application transaction `(app_id, N)` — the commit point: offsets and state are
//!    committed with it (silver conforms the same rows meanwhile, and writes nothing before it);
//! 5. **downstream**, each commit recording `(app_id, N)`, concurrently: silver rows, rejects to
//!    quarantine, and the batch's daily sums added to the stream's in-memory copy of
//!    `silver_usage_daily` ([`crate::silver::usage_daily::DailySeries`]). From Kafka, batch N+1
//!    is planned, fetched and parsed meanwhile (nothing of it is written);
//! 6. the **gold step**, recording the latest batch it covers: the changed daily rows upserted
//!    with the event marts on their grain ([`crate::gold::merge_event_marts`]), or both rewritten
//!    whole when they are a quarter of the table ([`crate::gold::rebuild_event_marts`]), then
//!    `org_health`. It follows every batch, except while the stream is behind (the next batch is
//!    already full, or with `--once`, read ahead at all): then it waits, up to `gold_lag`, or
//!    until nothing is left to read.
//!
//! After a crash at any instant, the restart reads bronze's transaction version B: plans above B
//! are discarded (nothing of them committed); batch B, if its silver is not marked done, is
//! finished — its rows are read back from bronze by ingest id, its input re-read for rejects, and
//! each table that already recorded B is skipped; then the batches whose gold step is not marked
//! done get it from their silver rows (`batch::catch_up_gold`). The tables then equal those of
//! an uninterrupted run.

pub mod batch;
pub mod checkpoint;
pub mod files;
pub mod kafka;
pub mod state;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::config::Settings;
use crate::lake::{self, Lake, Layer, Txn};
use crate::landing::{IngestMeta, Landed};
use crate::{Error, Result};
use batch::{BatchMetrics, Env};
use checkpoint::{Checkpoint, Input, Planned};
use state::EventState;

/// The `[stream]` table of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Time between micro-batch starts when following (`500ms`, `2s`, ...).
    pub trigger: String,
    /// How far behind the latest event time an event may arrive and still be on time (`1d`,
    /// `6h`, ...). Late events are never dropped; this bounds the in-memory dedup state.
    pub allowed_lateness: String,
    /// Most Kafka messages per micro-batch.
    pub max_batch_events: u64,
    /// A landing file untouched this long is complete, whatever its last byte.
    pub file_settle: String,
    /// How long Kafka may give no answer before the stream fails.
    pub kafka_timeout: String,
    /// A live stream compacts the event tables' small files at its first moment with nothing to
    /// read after this many micro-batches (0: never); `--once` leaves them to `maintain`.
    pub compact_every: u64,
    /// While the stream is behind (the next batch is already full), the daily table and gold
    /// take several batches in one step, at least this often (`30s`, `2m`, ...); otherwise
    /// every batch has its own.
    pub gold_lag: String,
    /// Megabytes the stream's state may hold in memory: the dedup hashes of event ids and the
    /// daily series (seven eighths), and the Bloom filters of dates let go (an eighth). Past it,
    /// the oldest event dates are let go after a gold step; an event of such a date that its
    /// filter may hold is then checked against bronze, and its daily series read back from the
    /// lake.
    pub state_memory_mb: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            trigger: "500ms".into(),
            allowed_lateness: "1d".into(),
            max_batch_events: 200_000,
            file_settle: "2s".into(),
            kafka_timeout: "120s".into(),
            compact_every: 10,
            gold_lag: "30s".into(),
            state_memory_mb: 2048,
        }
    }
}

/// Resolved stream settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Time between micro-batch starts.
    pub trigger: Duration,
    /// Allowed lateness.
    pub allowed_lateness: Duration,
    /// Most Kafka messages per batch.
    pub max_batch_events: u64,
    /// Settle time of a landing file.
    pub file_settle: Duration,
    /// Kafka timeout.
    pub kafka_timeout: Duration,
    /// Compaction interval in batches (0: never).
    pub compact_every: u64,
    /// Longest wait of the gold step while the stream is behind.
    pub gold_lag: Duration,
    /// Bytes of state held in memory.
    pub state_memory: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamConfig::default().resolve().unwrap_or_else(|_| unreachable!("the defaults parse"))
    }
}

impl StreamConfig {
    /// Parses the durations; the error names the bad key.
    pub fn resolve(&self) -> std::result::Result<StreamSettings, String> {
        let d = |key: &str, v: &str| parse_duration(v).map_err(|e| format!("[stream] {key}: {e}"));
        if self.max_batch_events == 0 {
            return Err("[stream] max_batch_events must be at least 1".into());
        }
        if self.state_memory_mb == 0 {
            return Err("[stream] state_memory_mb must be at least 1".into());
        }
        Ok(StreamSettings {
            trigger: d("trigger", &self.trigger)?,
            allowed_lateness: d("allowed_lateness", &self.allowed_lateness)?,
            max_batch_events: self.max_batch_events,
            file_settle: d("file_settle", &self.file_settle)?,
            kafka_timeout: d("kafka_timeout", &self.kafka_timeout)?,
            compact_every: self.compact_every,
            gold_lag: d("gold_lag", &self.gold_lag)?,
            state_memory: usize::try_from(self.state_memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        })
    }
}

/// Parses `250ms`, `30s`, `5m`, `6h`, `1d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 6h or 1d"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} has an unknown unit (ms, s, m, h or d)")),
    };
    n.checked_mul(ms)
        .filter(|ms| *ms <= 100 * 365 * 86_400_000)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Where the events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    /// `<landing>/usage_events_stream/`.
    Files,
    /// A Kafka topic.
    Kafka {
        /// Bootstrap brokers, `host:port[,host:port]`.
        brokers: String,
        /// Topic.
        topic: String,
    },
}

impl StreamSource {
    /// The stream's name: its checkpoint folder and Delta application id.
    pub fn name(&self) -> String {
        match self {
            StreamSource::Files => "usage_events_files".into(),
            StreamSource::Kafka { topic, .. } => format!("usage_events_kafka_{topic}"),
        }
    }
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Process what is available now, then return.
    pub once: bool,
    /// Set to stop after the current batch (signal handlers set it).
    pub stop: Arc<AtomicBool>,
    /// A backfill: land batches in bronze (and landing rejects in quarantine) only; the caller
    /// then rebuilds silver and gold from bronze ([`crate::pipeline::rebuild_event_tables`],
    /// what `run --ballista` does on the cluster) and calls [`mark_rebuilt`]. Until then the
    /// checkpoint says a rebuild is pending, and the next stream or run does it.
    pub bronze_only: bool,
}

/// What a stream did (one `stream` process, or the events part of a `run`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamReport {
    /// Stream name.
    pub stream: String,
    /// Micro-batches committed by this process.
    pub batches: u64,
    /// Batches finished after a crash (committed in bronze by an earlier process).
    pub recovered: u64,
    /// The last committed batch number.
    pub last_batch: i64,
    /// The watermark after the last batch, RFC 3339.
    pub watermark: Option<String>,
    /// Allowed lateness, seconds.
    pub allowed_lateness_s: u64,
    /// The first event date whose state is held in memory, once the memory budget let older
    /// dates go (`YYYY-MM-DD`; their late events are checked against the lake).
    pub held_from: Option<String>,
    /// Gold steps run (one per batch when the stream keeps up; fewer when it is behind and gold
    /// lags; more again when the state budget forces them).
    #[serde(default)]
    pub gold_steps: u64,
    /// Figures summed over the batches.
    pub totals: BatchMetrics,
    /// Wall time, milliseconds.
    pub millis: u64,
    /// Events read per second of wall time.
    pub events_per_s: f64,
}

/// One committed batch, as reported to the caller while the stream runs.
#[derive(Debug, Clone)]
pub struct BatchDone {
    /// Batch number.
    pub batch: i64,
    /// Its figures.
    pub metrics: BatchMetrics,
    /// Wall time of the batch, milliseconds.
    pub millis: u64,
    /// Watermark after it.
    pub watermark: Option<String>,
}

enum Reader {
    Files(files::FileSource),
    Kafka(kafka::KafkaSource, BTreeMap<i32, i64>),
}

impl Reader {
    async fn read(&self, input: &Input, meta: &IngestMeta) -> Result<Landed> {
        match (self, input) {
            (Reader::Files(f), Input::Files(names)) => f.read(names, meta),
            (Reader::Kafka(k, _), Input::Kafka { ranges, .. }) => k.read(ranges, meta).await,
            _ => Err(Error::Internal("a checkpoint's input does not match the stream's source".into())),
        }
    }

    /// True when the source holds at least another full batch beyond `next` (the batch read
    /// ahead, if any): the stream is behind.
    fn behind(&self, next: Option<&Input>, max_events: u64) -> bool {
        match (self, next) {
            (Reader::Files(f), _) => f.behind(),
            (Reader::Kafka(..), Some(Input::Kafka { ranges, .. })) => {
                ranges.iter().map(|(_, s, e)| (e - s).max(0) as u64).sum::<u64>() >= max_events
            }
            _ => false,
        }
    }

    fn advance(&mut self, input: &Input) {
        match (self, input) {
            (Reader::Files(f), Input::Files(names)) => f.done(names),
            (Reader::Kafka(_, position), Input::Kafka { ranges, .. }) => {
                for (p, _, end) in ranges {
                    let e = position.entry(*p).or_insert(*end);
                    *e = (*e).max(*end);
                }
            }
            _ => {}
        }
    }
}

/// Runs a stream over the lake of `settings`, holding the lake's events lock.
pub async fn run(
    settings: &Settings,
    source: &StreamSource,
    options: &StreamOptions,
    on_batch: &(dyn Fn(&BatchDone) + Sync),
) -> Result<StreamReport> {
    let lake = Lake::new(&settings.lake)?;
    let _lock = checkpoint::lock(&lake)?;
    run_locked(settings, &lake, source, options, on_batch).await
}

/// [`run`] for a caller that already holds the events lock (`cloudlake run`).
pub async fn run_locked(
    settings: &Settings,
    lake: &Lake,
    source: &StreamSource,
    options: &StreamOptions,
    on_batch: &(dyn Fn(&BatchDone) + Sync),
) -> Result<StreamReport> {
    let started = Instant::now();
    let cfg = &settings.stream;
    let name = source.name();
    let app_id = format!("cloudlake.stream.{name}");
    let cp = Checkpoint::open(lake, &name)?;
    // Where the committed batches left off.
    let last = lake.txn_version(Layer::Bronze, "usage_events", &app_id).await?.unwrap_or(0);
    cp.discard_after(last)?;
    let plans = cp.planned_upto(last)?;
    // A batch a crash interrupted after its bronze commit, which silver and gold still wait for
    // (a backfill batch waits for the rebuild instead).
    let interrupted = plans.last().filter(|p| !cp.silver_done(p.batch) && !p.bronze_only).cloned();

    let ctx = lake::session();
    // Silver and gold enrich events with the masters. A backfill lands bronze only (in `run`,
    // beside the masters being built), so it needs them only to finish an interrupted batch.
    if !options.bronze_only || interrupted.is_some() {
        register_masters(&ctx, lake).await?;
    }
    let env = Env {
        lake,
        ctx: &ctx,
        silver: &settings.silver,
        daily: Default::default(),
        budget: cfg.state_memory,
    };
    let mut reader = match source {
        StreamSource::Files => {
            let done: HashSet<String> = plans
                .iter()
                .flat_map(|p| match &p.input {
                    Input::Files(f) => f.clone(),
                    Input::Kafka { .. } => vec![],
                })
                .collect();
            Reader::Files(files::FileSource::new(&settings.landing, cfg.file_settle, done)?)
        }
        StreamSource::Kafka { brokers, topic } => {
            let k = kafka::KafkaSource::new(brokers, topic, &format!("cloudlake-{name}"), cfg.kafka_timeout)?;
            Reader::Kafka(k, BTreeMap::new())
        }
    };
    for p in &plans {
        reader.advance(&p.input);
    }
    let last_plan = plans.last().cloned();
    let mut state = EventState::restore(
        &ctx,
        lake,
        cfg.allowed_lateness,
        last_plan.as_ref().and_then(|p| p.max_event_micros),
        cfg.state_memory,
    )
    .await?;
    let mut report = StreamReport {
        stream: name.clone(),
        last_batch: last,
        allowed_lateness_s: cfg.allowed_lateness.as_secs(),
        ..Default::default()
    };

    // Finish the last batch if a crash interrupted it after its bronze commit. A backfill
    // batch has nothing left to do: its rejects went first, silver and gold wait for the rebuild.
    if let Some(p) = interrupted {
        tracing::warn!(batch = p.batch, "Finishing a micro-batch interrupted after its bronze commit.");
        let txn = Txn::batch(&app_id, p.batch);
        let meta = IngestMeta { run_id: p.run_id.clone(), ingest_ts_micros: p.ingest_ts_micros };
        let landed = reader.read(&p.input, &meta).await?;
        let rows = bronze_rows_of(&ctx, lake, &p.run_id).await?;
        let rows = batch::Rows::Committed(rows);
        batch::downstream(&env, &txn, rows, &landed.rejects, &meta, p.watermark_micros, true).await?;
        cp.mark_silver(p.batch)?;
        report.recovered += 1;
    }
    // A backfill (by any stream of the lake) left batches in bronze only: unless this is a
    // backfill too (its caller rebuilds), silver and gold are rebuilt from bronze first.
    if checkpoint::rebuild_pending(lake) && !options.bronze_only {
        tracing::warn!(upto = last, "Rebuilding silver and gold over batches a backfill left in bronze.");
        let meta = IngestMeta {
            run_id: crate::pipeline::new_run_id(chrono::Utc::now()),
            ingest_ts_micros: chrono::Utc::now().timestamp_micros(),
        };
        let rebuilt = lake::session();
        lake.register_all(&rebuilt).await?;
        register_masters(&rebuilt, lake).await?;
        let (_, gold) =
            crate::pipeline::rebuild_event_tables(&rebuilt, lake, &meta, &settings.silver).await?;
        report.totals.absorb(&BatchMetrics { gold, ..Default::default() });
    }
    // Batches whose silver committed but whose gold step had not when the stream stopped.
    let tail = if options.bronze_only { vec![] } else { cp.uncommitted_tail(last)? };
    if let Some(first) = tail.first().map(|p| p.batch) {
        tracing::warn!(first, last, "Bringing gold up to date with batches a stop interrupted.");
        let (daily_rows, gold) = batch::catch_up_gold(&env, &Txn::batch(&app_id, last), &tail).await?;
        cp.mark_committed_range(first, last)?;
        env.bound_memory(&mut state)?;
        report.totals.absorb(&BatchMetrics { gold, daily_rows, ..Default::default() });
        report.gold_steps += 1;
    }

    if options.bronze_only {
        // Set before the first bronze-only commit: a crash before the caller's rebuild leaves it.
        checkpoint::mark_rebuild_pending(lake)?;
    }

    // With --once, Kafka is read up to the offsets it holds now.
    let upto = match (&reader, options.once) {
        (Reader::Kafka(k, _), true) => {
            Some(k.watermarks().await?.into_iter().map(|(p, (_, h))| (p, h)).collect())
        }
        _ => None,
    };
    let session = crate::pipeline::new_run_id(chrono::Utc::now());
    let meta_of = |batch: i64| IngestMeta {
        run_id: format!("{session}-b{batch:08}"),
        ingest_ts_micros: chrono::Utc::now().timestamp_micros(),
    };
    let mut next = last + 1;
    // The next Kafka batch, read while the previous one went through silver and gold.
    let mut prefetched: Option<(Input, IngestMeta, Landed, u64)> = None;
    // Batches committed since the event tables were last compacted.
    let mut uncompacted = 0u64;
    let mut compaction = Compaction::default();
    // The first batch whose gold step waits, and when the last gold step ended.
    let mut gold_from: Option<i64> = None;
    let mut last_gold = Instant::now();
    // The gold step of batches `from..=upto`, then their commit markers: (daily rows, marts, ms).
    // With its state (within the memory budget once the step is written).
    let gold = async |from: i64,
                      upto: i64,
                      state: &mut EventState|
           -> Result<(u64, Vec<crate::gold::GoldMetrics>, u64)> {
        let started = Instant::now();
        let (daily_rows, gold) = batch::gold_step(&env, &Txn::batch(&app_id, upto)).await?;
        cp.mark_committed_range(from, upto)?;
        let floor = env.bound_memory(state)?;
        let millis = started.elapsed().as_millis() as u64;
        if upto > from {
            let held_from = floor.map(|d| crate::serving::from_days(d).to_string());
            tracing::info!(batches = upto - from + 1, daily_rows, millis, held_from, "Gold step committed.");
        }
        Ok((daily_rows, gold, millis))
    };
    loop {
        if options.stop.load(Ordering::Relaxed) {
            break;
        }
        let tick = Instant::now();
        let (input, meta, landed, read_ms) = match prefetched.take() {
            Some(p) => p,
            None => {
                let (input, pending) = match &mut reader {
                    Reader::Files(f) => f.plan(settings.batch_bytes)?,
                    Reader::Kafka(k, position) => {
                        (k.plan(position, cfg.max_batch_events, upto.as_ref()).await?, 0)
                    }
                };
                if input.is_empty() {
                    if let Some(from) = gold_from.take() {
                        let (daily_rows, gold, _) = gold(from, next - 1, &mut state).await?;
                        report.totals.absorb(&BatchMetrics { gold, daily_rows, ..Default::default() });
                        report.gold_steps += 1;
                        last_gold = Instant::now();
                        continue;
                    }
                    if options.once && pending == 0 {
                        break;
                    }
                    compaction.reap().await;
                    if !options.once
                        && pending == 0
                        && cfg.compact_every > 0
                        && uncompacted >= cfg.compact_every
                        && compaction.start(lake, options.bronze_only)
                    {
                        uncompacted = 0;
                    }
                    // A file seen for the first time is ready after one more listing: look again soon.
                    let wait =
                        if options.once || pending > 0 { Duration::from_millis(200) } else { cfg.trigger };
                    sleep_unless_stopped(wait.saturating_sub(tick.elapsed()), &options.stop).await;
                    continue;
                }
                let meta = meta_of(next);
                let landed = reader.read(&input, &meta).await?;
                (input, meta, landed, tick.elapsed().as_millis() as u64)
            }
        };
        let mut txn = Txn::batch(&app_id, next);
        txn.metadata = vec![("cloudlake.input".to_string(), serde_json::to_value(&input)?)];
        let now_micros = meta.ingest_ts_micros;
        // The batch's span follows its futures (a guard held across an await would leak it into
        // whatever else the thread runs meanwhile).
        let span = tracing::info_span!("batch", stream = %name, batch = next);
        let read = landed.read;
        let rows_in: u64 = landed.batches.iter().map(|b| b.num_rows() as u64).sum();
        let rejects = landed.rejects.len() as u64;
        let cast_failures = landed.cast_failures.clone();
        let watermark = state.watermark();
        let max_before = state.max_event_micros();
        let dedup_started = Instant::now();
        let (new_rows, duplicates) =
            batch::dedup(&env, &state, landed.batches).instrument(span.clone()).await?;
        let (late, max_lateness) = batch::lateness(&new_rows, watermark, max_before);
        cp.write_planned(&Planned {
            batch: next,
            run_id: meta.run_id.clone(),
            ingest_ts_micros: meta.ingest_ts_micros,
            input: input.clone(),
            watermark_micros: watermark,
            max_event_micros: state.max_event_micros_after(&new_rows, now_micros),
            bronze_only: options.bronze_only,
        })?;
        let dedup_ms = dedup_started.elapsed().as_millis() as u64;
        reader.advance(&input);
        let written = rows_in - duplicates;
        // Bronze commits (the commit point) while silver conforms the same rows; meanwhile the
        // next Kafka batch is fetched and parsed.
        let work = async {
            if options.bronze_only {
                batch::bronze_only(&env, &txn, new_rows.clone(), &landed.rejects, &meta).await
            } else {
                let rows = batch::Rows::New(new_rows.clone());
                batch::downstream(&env, &txn, rows, &landed.rejects, &meta, watermark, false).await
            }
        };
        let prefetch = async {
            match &reader {
                Reader::Kafka(k, position) if !options.stop.load(Ordering::Relaxed) => {
                    let t = Instant::now();
                    let input = k.plan(position, cfg.max_batch_events, upto.as_ref()).await?;
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let meta = meta_of(next + 1);
                    let landed = reader.read(&input, &meta).await?;
                    Ok(Some((input, meta, landed, t.elapsed().as_millis() as u64)))
                }
                _ => Ok::<_, Error>(None),
            }
        };
        // The state takes in the batch's ids on a thread of its own meanwhile: hashing a few
        // hundred thousand ids is work for one core, which the commit leaves partly idle. Nothing
        // reads the state before the commit ends, and an error ends the stream.
        let absorbing = {
            let mut taken = std::mem::replace(&mut state, EventState::new(cfg.allowed_lateness));
            let rows = new_rows.clone();
            tokio::task::spawn_blocking(move || taken.absorb(&rows, now_micros).map(|()| taken))
        };
        let down_started = Instant::now();
        let (m, ahead) = futures::future::join(work.instrument(span.clone()), prefetch).await;
        let absorbed = absorbing.await;
        // The commit's error first, when there is one: it is the cause.
        let mut m = m?;
        state =
            absorbed.map_err(|e| Error::Internal(format!("the stream state's update panicked: {e}")))??;
        let downstream_ms = down_started.elapsed().as_millis() as u64;
        // A failed read ahead is only logged: the next batch plans and reads again (and fails
        // then if the source is really gone), while this one is complete.
        prefetched = ahead.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Reading the next batch ahead failed; it will be read again.");
            None
        });
        let bronze_ms = m.bronze.millis;
        let mut gold_ms = 0;
        if !options.bronze_only {
            cp.mark_silver(next)?;
            let from = *gold_from.get_or_insert(next);
            // Behind (the next batch is already full), the gold step waits, up to gold_lag. With
            // --once, a batch read ahead holds the rest up to the end fixed at start: the gold
            // step waits for it too (it is the last, and its own gold step follows at once).
            let behind = reader.behind(prefetched.as_ref().map(|p| &p.0), cfg.max_batch_events)
                || (options.once && prefetched.is_some());
            // Past the state budget, the gold step runs now: only written dates can be let go.
            if !behind || last_gold.elapsed() >= cfg.gold_lag || env.over_budget(&state) {
                gold_from = None;
                (m.daily_rows, m.gold, gold_ms) =
                    gold(from, next, &mut state).instrument(span.clone()).await?;
                report.gold_steps += 1;
                last_gold = Instant::now();
            }
        }
        m.bronze.source = "usage_events".into();
        m.bronze.files = match &input {
            Input::Files(f) => f.len(),
            Input::Kafka { ranges, .. } => ranges.len(),
        };
        m.bronze.read = read;
        m.bronze.written = written;
        m.bronze.duplicates = duplicates + (rejects - m.bronze.quarantined);
        m.bronze.batches = 1;
        m.bronze.cast_failures = cast_failures;
        m.bronze.millis = tick.elapsed().as_millis() as u64;
        m.late_events = late;
        m.max_lateness_s = max_lateness;
        if !m.bronze.conserved() {
            return Err(Error::Internal(format!(
                "stream batch {next} lost track of records: read {} != written {} + quarantined {} + duplicates {}",
                m.bronze.read, m.bronze.written, m.bronze.quarantined, m.bronze.duplicates
            )));
        }
        let done = BatchDone {
            batch: next,
            metrics: m,
            millis: tick.elapsed().as_millis() as u64,
            watermark: batch::watermark_text(state.watermark()),
        };
        span.in_scope(|| {
            tracing::info!(
                read = done.metrics.bronze.read,
                written = done.metrics.bronze.written,
                duplicates = done.metrics.bronze.duplicates,
                quarantined = done.metrics.bronze.quarantined,
                late = done.metrics.late_events,
                corrected_keys = done.metrics.corrected_keys,
                read_ms,
                dedup_ms,
                bronze_ms,
                downstream_ms,
                gold_ms,
                millis = done.millis,
                "Micro-batch committed."
            )
        });
        on_batch(&done);
        uncompacted += 1;
        // A live stream starts a compaction at a moment with nothing to read, unless input never
        // pauses (then at four times the interval); it runs beside the batches ([`Compaction`]). A
        // catch-up (--once) does not: nothing it does reads the files back (dedup holds every
        // id's hash), and rewriting a growing table every few batches cost more than the small
        // files (scale 100 `run`: 47 s with, 40 s without); `cloudlake maintain` compacts.
        compaction.reap().await;
        if !options.once
            && cfg.compact_every > 0
            && uncompacted >= 4 * cfg.compact_every
            && compaction.start(lake, options.bronze_only)
        {
            uncompacted = 0;
        }
        report.totals.absorb(&done.metrics);
        report.batches += 1;
        report.last_batch = next;
        next += 1;
        if !options.once {
            sleep_unless_stopped(cfg.trigger.saturating_sub(tick.elapsed()), &options.stop).await;
        }
    }
    if let Some(from) = gold_from {
        let (daily_rows, gold, _) = gold(from, next - 1, &mut state).await?;
        report.totals.absorb(&BatchMetrics { gold, daily_rows, ..Default::default() });
        report.gold_steps += 1;
    }
    compaction.finish().await;
    report.watermark = batch::watermark_text(state.watermark());
    report.held_from = state.floor().map(|d| crate::serving::from_days(d).to_string());
    report.millis = started.elapsed().as_millis() as u64;
    report.events_per_s = report.totals.bronze.read as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(report)
}

/// The event tables' compaction, run beside the stream: it only rewrites files (no data change),
/// so a batch's appends commit alongside it (Delta's conflict check allows both), and data that
/// arrives meanwhile is not held back until it ends (a file delivered as the compaction of the
/// bundled lake began used to wait 1.2 s). One runs at a time; a failed one is logged, and the
/// next retries.
#[derive(Default)]
struct Compaction(Option<tokio::task::JoinHandle<Result<()>>>);

impl Compaction {
    /// Starts a compaction unless one is running; false when one is.
    fn start(&mut self, lake: &Lake, bronze_only: bool) -> bool {
        if self.0.is_some() {
            return false;
        }
        let lake = lake.clone();
        self.0 = Some(tokio::spawn(async move { compact_events(&lake, bronze_only).await }));
        true
    }

    /// Takes the outcome of a compaction that has ended.
    async fn reap(&mut self) {
        if self.0.as_ref().is_some_and(|h| h.is_finished()) {
            self.finish().await;
        }
    }

    /// Waits for the running compaction, if any.
    async fn finish(&mut self) {
        let Some(handle) = self.0.take() else { return };
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Compacting the event tables failed; the next compaction retries.")
            }
            Err(e) => tracing::warn!(error = %e, "The compaction task failed; the next compaction retries."),
        }
    }
}

/// Rewrites the event tables' small files (bronze's only, in a backfill): each batch adds a
/// file per date partition, and reading them all is what grows.
async fn compact_events(lake: &Lake, bronze_only: bool) -> Result<()> {
    let started = Instant::now();
    let tables: &[_] = if bronze_only {
        &[(Layer::Bronze, "usage_events")]
    } else {
        &[(Layer::Bronze, "usage_events"), (Layer::Silver, "usage_events")]
    };
    for &(layer, table) in tables {
        crate::lake::maintain::compact(lake, layer, table).await?;
    }
    tracing::info!(millis = started.elapsed().as_millis() as u64, "Event tables compacted.");
    Ok(())
}

async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep((until - Instant::now()).min(Duration::from_millis(50))).await;
    }
}

/// Bytes of landing event files the files stream has not read yet, and of those it has.
pub async fn file_backlog(settings: &Settings, lake: &Lake) -> Result<(u64, u64)> {
    let name = StreamSource::Files.name();
    let app_id = format!("cloudlake.stream.{name}");
    let last = lake.txn_version(Layer::Bronze, "usage_events", &app_id).await?.unwrap_or(0);
    let read: HashSet<String> = Checkpoint::open(lake, &name)?
        .planned_upto(last)?
        .into_iter()
        .flat_map(|p| match p.input {
            Input::Files(f) => f,
            Input::Kafka { .. } => vec![],
        })
        .collect();
    files::FileSource::new(&settings.landing, settings.stream.file_settle, read)?.sizes()
}

pub use checkpoint::{mark_rebuild_pending, rebuild_pending};

/// Records that silver and gold were rebuilt over every batch bronze committed for `source`
/// (its backfill batches are done) and clears the pending mark.
pub async fn mark_rebuilt(lake: &Lake, source: &StreamSource) -> Result<()> {
    let app_id = format!("cloudlake.stream.{}", source.name());
    let last = lake.txn_version(Layer::Bronze, "usage_events", &app_id).await?.unwrap_or(0);
    Checkpoint::open(lake, &source.name())?.mark_rebuilt(last)?;
    checkpoint::clear_rebuild_pending(lake)
}

/// Every stream of the lake (a folder under `_checkpoints/`) with the last batch bronze
/// committed for it, as `(app_id, batch)`: what a full rebuild of the event tables covers.
pub async fn committed_batches(lake: &Lake) -> Result<Vec<(String, i64)>> {
    let dir = lake.state_dir().join("_checkpoints");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(out) };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let app_id = format!("cloudlake.stream.{name}");
        if let Some(v) = lake.txn_version(Layer::Bronze, "usage_events", &app_id).await? {
            out.push((app_id, v));
        }
    }
    Ok(out)
}

/// Registers the silver masters the event rows are conformed with and gold joins.
async fn register_masters(ctx: &datafusion::prelude::SessionContext, lake: &Lake) -> Result<()> {
    for t in ["customers_orgs", "resources", "support_tickets", "nps_surveys"] {
        if !lake.register(ctx, Layer::Silver, t).await? {
            return Err(Error::Usage(format!(
                "the lake at {} has no silver_{t} yet; run `cloudlake run` once to load the masters before streaming events",
                lake.location()
            )));
        }
    }
    let view = ctx.sql("SELECT DISTINCT org_id FROM silver_customers_orgs").await?.into_view();
    let _ = ctx.deregister_table("silver_orgs_current")?;
    ctx.register_table("silver_orgs_current", view)?;
    Ok(())
}

/// A committed batch's rows, read back from bronze by their ingest id.
async fn bronze_rows_of(
    ctx: &datafusion::prelude::SessionContext,
    lake: &Lake,
    run_id: &str,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    const T: &str = "__stream_bronze_replay";
    if !lake.register_as(ctx, Layer::Bronze, "usage_events", T).await? {
        return Ok(vec![]);
    }
    let df = ctx
        .sql(&format!("SELECT * FROM {T} WHERE run_id = $1 ORDER BY source_file, source_line"))
        .await?
        .with_param_values(vec![datafusion::scalar::ScalarValue::Utf8(Some(run_id.to_string()))])?;
    let rows = df.collect().await;
    let _ = ctx.deregister_table(T)?;
    // Column order and types as bronze declares them.
    let schema = crate::bronze::bronze_schema(&crate::bronze::usage_events::SOURCE);
    rows?
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    let c = b.column_by_name(f.name()).ok_or_else(|| {
                        Error::Internal(format!("bronze usage_events has no column {}", f.name()))
                    })?;
                    Ok(datafusion::arrow::compute::cast(c, f.data_type())?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(datafusion::arrow::array::RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_bad_ones_are_named() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("99999999999999d").is_err());
        let bad = StreamConfig { trigger: "fast".into(), ..Default::default() };
        assert!(bad.resolve().unwrap_err().contains("[stream] trigger"));
        assert_eq!(StreamSettings::default().allowed_lateness, Duration::from_secs(86_400));
    }
}
