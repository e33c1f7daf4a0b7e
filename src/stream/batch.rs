//! One micro-batch through the layers: bronze (dedup, the commit point), then silver and
//! quarantine, each commit recording the batch's Delta transaction, its daily sums added to the
//! stream's in-memory daily series; then the gold step (the daily table and the marts), for this
//! batch or, while a backlog is read, for several at once.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::prelude::SessionContext;
use foldhash::{HashSet, HashSetExt};
use serde::{Deserialize, Serialize};

use crate::bronze::{self, BronzeMetrics, usage_events};
use crate::gold::{self, GoldMetrics};
use crate::lake::{Lake, Layer, Txn, first_per_key, register_batches};
use crate::landing::{IngestMeta, Reject};
use crate::silver::usage_daily::{self, Changed, DailySeries};
use crate::silver::{self, SilverMetrics, SilverSettings};
use crate::{Result, quarantine};

use super::checkpoint::Planned;
use super::state::{EVENT_ID, EVENT_TS, EventState};

/// Past its budget the state lets go of old dates until it holds this fraction (1/N) of it. Each
/// forced gold step rewrites the daily table and the marts of its grain, whose files late events
/// all touch, so fewer steps matter more than the days held: on a 480-day live feed at scale 30,
/// a quarter took 7-8 gold steps and 113.6 s of batches against 9 and 120.0 s for a half (256 MB),
/// and 93 s against 108 s with 512 MB.
const LET_GO_TO: usize = 4;

/// What one or more micro-batches did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchMetrics {
    /// Bronze figures (read = written + quarantined + duplicates).
    pub bronze: BronzeMetrics,
    /// Silver figures for `usage_events` (bronze_rows = the batch's new bronze rows).
    pub silver: SilverMetrics,
    /// Events older than the watermark when they arrived (landed and aggregated all the same).
    pub late_events: u64,
    /// (org, date, service) gold keys that late events corrected.
    pub corrected_keys: u64,
    /// Largest lateness seen: how far behind the latest event time an event arrived, seconds.
    pub max_lateness_s: i64,
    /// Daily feature rows recomputed and merged.
    pub daily_rows: u64,
    /// Per-mart gold figures.
    pub gold: Vec<GoldMetrics>,
}

impl BatchMetrics {
    /// Adds another batch's figures.
    pub fn absorb(&mut self, other: &BatchMetrics) {
        self.bronze.absorb(&other.bronze);
        self.silver.absorb(&other.silver);
        self.late_events += other.late_events;
        self.corrected_keys += other.corrected_keys;
        self.max_lateness_s = self.max_lateness_s.max(other.max_lateness_s);
        self.daily_rows += other.daily_rows;
        for g in &other.gold {
            match self.gold.iter_mut().find(|m| m.mart == g.mart) {
                Some(m) => m.absorb(g),
                None => self.gold.push(g.clone()),
            }
        }
    }
}

/// Name under which the bronze Delta table is registered for dedup lookups (`bronze_usage_events`
/// holds the micro-batch's rows while silver conforms them).
const BRONZE_TABLE: &str = "__stream_bronze_usage_events";
const CANDIDATES: &str = "__stream_dedup_candidates";

/// The session and settings every batch uses.
pub(crate) struct Env<'a> {
    pub lake: &'a Lake,
    pub ctx: &'a SessionContext,
    pub silver: &'a SilverSettings,
    /// `silver_usage_daily` in memory between batches (None: load it from the lake when needed),
    /// with the rows changed since the last gold step.
    pub daily: std::sync::Mutex<Option<Held>>,
    /// Bytes the dedup state and the daily series may hold together ([`Env::bound_memory`]).
    pub budget: usize,
}

/// The daily series a stream holds, and the rows its gold step has yet to write.
pub(crate) struct Held {
    series: DailySeries,
    changed: Changed,
}

impl Env<'_> {
    /// The daily series held between batches, taken out while a batch uses them (a failure
    /// leaves none; the stream then stops, and its restart brings gold up to date from silver).
    fn take_daily(&self) -> Option<Held> {
        self.daily.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Keeps the daily series for the next batch.
    fn keep_daily(&self, held: Held) {
        *self.daily.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
    }

    /// Whether the id hashes and the daily series together hold more than their share of the
    /// budget ([`crate::stream::state::split_budget`]). The stream then runs its gold step at
    /// once, whatever `gold_lag`, so that [`Env::bound_memory`] can let dates go: a catch-up
    /// that lets gold lag would otherwise hold every day it read until the next gold step.
    pub fn over_budget(&self, state: &EventState) -> bool {
        let guard = self.daily.lock().unwrap_or_else(|e| e.into_inner());
        held_bytes(state, guard.as_ref()) > crate::stream::state::split_budget(self.budget).0
    }

    /// Keeps the dedup state's id hashes and the daily series within the budget (their share of
    /// it, [`crate::stream::state::split_budget`]), once a gold step wrote every change: past it,
    /// both let go of the same oldest dates (the newest kept) until they hold a quarter of their
    /// share ([`LET_GO_TO`]), so the next batches have room before the next forced gold step
    /// ([`Env::over_budget`]); the id hashes of those dates become Bloom filters, within the
    /// other share.
    /// Returns the first date still held, when some were let go.
    pub fn bound_memory(&self, state: &mut EventState) -> Result<Option<i32>> {
        let mut guard = self.daily.lock().unwrap_or_else(|e| e.into_inner());
        let held = &mut *guard;
        if held.as_ref().is_some_and(|h| !h.changed.is_empty()) {
            return Err(crate::Error::Internal("memory bounded before the gold step wrote".into()));
        }
        let (budget, filters) = crate::stream::state::split_budget(self.budget);
        if held_bytes(state, held.as_ref()) <= budget {
            return Ok(state.floor());
        }
        let ids = state.bytes_by_date();
        let daily: Vec<(i32, usize)> =
            held.as_ref().map(|h| h.series.bytes_by_date().collect()).unwrap_or_default();
        let floor = usage_daily::floor_within(ids.into_iter().chain(daily), budget / LET_GO_TO);
        state.let_go_before(floor, filters);
        match held.as_mut() {
            Some(h) => h.series.let_go_before(floor).map(|()| Some(floor)),
            None => Ok(Some(floor)),
        }
    }
}

/// Bytes the dedup state's id hashes and the held daily series take, by their dates.
fn held_bytes(state: &EventState, held: Option<&Held>) -> usize {
    let daily: usize = held.map_or(0, |h| h.series.bytes_by_date().map(|d| d.1).sum());
    state.bytes_by_date().values().sum::<usize>() + daily
}

/// Dedup of landed rows by event_id: first within the batch, then against the state (recent
/// ids) and bronze (late ones). Returns the new rows and how many were duplicates.
pub(crate) async fn dedup(
    env: &Env<'_>,
    state: &EventState,
    rows: Vec<RecordBatch>,
) -> Result<(Vec<RecordBatch>, u64)> {
    let before: usize = rows.iter().map(|b| b.num_rows()).sum();
    let rows = first_per_key(rows, &[EVENT_ID])?;
    // Per row: keep (Some(true)), drop (Some(false)), or ask bronze (None). The batches (one per
    // landing file) are checked on every core: each check probes a large hash set.
    let checked = crate::parallel::map(rows.iter().collect(), |b| check_rows(state, b))?;
    let mut verdicts: Vec<Vec<Option<bool>>> = Vec::with_capacity(rows.len());
    let mut ask: Vec<(String, Option<i32>)> = Vec::new();
    for c in checked {
        verdicts.push(c.verdicts);
        ask.extend(c.ask);
    }
    let existing = existing_ids(env, ask).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (b, v) in rows.into_iter().zip(verdicts) {
        let ids = cast(b.column_by_name(EVENT_ID).ok_or_else(no_col)?, &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let keep: BooleanArray = v
            .iter()
            .enumerate()
            .map(|(i, k)| Some(k.unwrap_or_else(|| !existing.contains(ids.value(i)))))
            .collect();
        let kept = if keep.true_count() == b.num_rows() { b } else { filter_record_batch(&b, &keep)? };
        if kept.num_rows() > 0 {
            out.push(kept);
        }
    }
    let after: usize = out.iter().map(|b| b.num_rows()).sum();
    Ok((out, (before - after) as u64))
}

/// One batch's verdicts against the state, and the rows only bronze can tell about.
struct Checked {
    verdicts: Vec<Option<bool>>,
    ask: Vec<(String, Option<i32>)>,
}

fn check_rows(state: &EventState, b: &RecordBatch) -> Result<Checked> {
    let ids = cast(b.column_by_name(EVENT_ID).ok_or_else(no_col)?, &DataType::Utf8)?;
    let ids = ids.as_string::<i32>();
    let ts = b.column_by_name(EVENT_TS).ok_or_else(no_col)?.as_primitive::<TimestampMicrosecondType>();
    let dates = b
        .column_by_name("event_date")
        .ok_or_else(no_col)?
        .as_primitive::<datafusion::arrow::datatypes::Date32Type>();
    let mut out = Checked { verdicts: Vec::with_capacity(b.num_rows()), ask: Vec::new() };
    for i in 0..b.num_rows() {
        let t = ts.is_valid(i).then(|| ts.value(i));
        let date = dates.is_valid(i).then(|| dates.value(i));
        match state.check(ids.value(i), t, date) {
            Some(seen) => out.verdicts.push(Some(!seen)),
            None => {
                out.verdicts.push(None);
                out.ask.push((ids.value(i).to_string(), date));
            }
        }
    }
    Ok(out)
}

fn no_col() -> crate::Error {
    crate::Error::Internal("landed usage events lack event_id, timestamp or event_date".into())
}

/// The ids among `ask` that bronze already holds, reading only their date partitions.
async fn existing_ids(env: &Env<'_>, ask: Vec<(String, Option<i32>)>) -> Result<HashSet<String>> {
    if ask.is_empty()
        || !env.lake.register_as(env.ctx, Layer::Bronze, usage_events::SOURCE.name, BRONZE_TABLE).await?
    {
        return Ok(HashSet::new());
    }
    let mut dates: Vec<i32> = ask.iter().filter_map(|a| a.1).collect();
    dates.sort_unstable();
    dates.dedup();
    let null_dates = ask.iter().any(|a| a.1.is_none());
    let mut filters: Vec<String> = Vec::new();
    if !dates.is_empty() {
        let list: Vec<String> =
            dates.iter().map(|d| format!("DATE '{}'", crate::serving::from_days(*d))).collect();
        filters.push(format!("b.event_date IN ({})", list.join(", ")));
    }
    if null_dates {
        filters.push("b.event_date IS NULL".into());
    }
    let ids = datafusion::arrow::array::StringArray::from_iter_values(ask.iter().map(|a| a.0.as_str()));
    let schema =
        Arc::new(datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new(
            EVENT_ID,
            DataType::Utf8,
            false,
        )]));
    register_batches(
        env.ctx,
        CANDIDATES,
        schema.clone(),
        vec![RecordBatch::try_new(schema, vec![Arc::new(ids)])?],
    )?;
    let sql = format!(
        "SELECT DISTINCT b.{EVENT_ID} FROM {BRONZE_TABLE} b JOIN {CANDIDATES} c ON b.{EVENT_ID} = c.{EVENT_ID} WHERE {}",
        filters.join(" OR ")
    );
    let found = env.ctx.sql(&sql).await?.collect().await;
    let _ = env.ctx.deregister_table(CANDIDATES)?;
    let mut out = HashSet::new();
    for b in found? {
        let ids = cast(b.column(0), &DataType::Utf8)?;
        out.extend(ids.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

/// Late events among new rows: (count, largest lateness in seconds behind `max_before`).
pub(crate) fn lateness(rows: &[RecordBatch], watermark: Option<i64>, max_before: Option<i64>) -> (u64, i64) {
    let (Some(wm), Some(max)) = (watermark, max_before) else { return (0, 0) };
    let mut late = 0;
    let mut worst = 0i64;
    for b in rows {
        let Some(ts) = b.column_by_name(EVENT_TS) else { continue };
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        for t in ts.iter().flatten() {
            if t < wm {
                late += 1;
                worst = worst.max((max - t) / 1_000_000);
            }
        }
    }
    (late, worst)
}

/// Appends the batch's new rows to bronze in a commit recording `txn`, even when there are none:
/// this commit is the batch's commit point.
pub(crate) async fn commit_bronze(lake: &Lake, rows: Vec<RecordBatch>, txn: &Txn) -> Result<()> {
    let source = &usage_events::SOURCE;
    lake.append_txn(
        Layer::Bronze,
        source.name,
        rows,
        bronze::bronze_schema(source),
        &bronze::partition_columns(source),
        txn,
    )
    .await?;
    Ok(())
}

/// A backfill batch ([`super::StreamOptions::bronze_only`]): the landing rejects to
/// quarantine, then the new rows to bronze (the commit point), both recording `txn`. Silver and
/// gold are rebuilt from bronze once the backfill is over. The rejects go first: quarantine
/// drops a reject it holds, so a batch replayed after a crash writes them once, and a batch
/// bronze committed has its rejects in quarantine. That write records no transaction: if the
/// process dies before the bronze commit, batch N is planned again (maybe from other input),
/// and its quarantine write must not look done already. Returns the bronze figures
/// (`quarantined`: rejects new to quarantine).
pub(crate) async fn bronze_only(
    env: &Env<'_>,
    txn: &Txn,
    rows: Vec<RecordBatch>,
    rejects: &[Reject],
    meta: &IngestMeta,
) -> Result<BatchMetrics> {
    let started = Instant::now();
    let mut m = BatchMetrics::default();
    if !rejects.is_empty() {
        let q = quarantine::rejects_batch(rejects, meta)?;
        m.bronze.quarantined = count_new_rejects(env, q.clone()).await?;
        quarantine::write_txn(env.ctx, env.lake, usage_events::SOURCE.name, vec![q], None).await?;
    }
    commit_bronze(env.lake, rows, txn).await?;
    m.silver.table = silver::usage_events::TABLE.name.to_string();
    m.bronze.millis = started.elapsed().as_millis() as u64;
    Ok(m)
}

/// A batch's new bronze rows, and whether bronze holds them yet.
pub(crate) enum Rows {
    /// Not committed: [`downstream`] commits them to bronze (the batch's commit point) while
    /// silver conforms them, and writes nothing else before that commit.
    New(Vec<RecordBatch>),
    /// Already in bronze (a batch being finished after a crash).
    Committed(Vec<RecordBatch>),
}

/// Everything after bronze for one batch but its gold step: silver rows and silver rejects (with
/// the bronze rejects) to quarantine, and the batch's daily sums added to the stream's series
/// ([`gold_step`] writes them). With `replay`, a table that already recorded `txn` is skipped
/// and the series are left alone (the batch is being finished after a crash:
/// [`catch_up_gold`] then takes its silver rows).
pub(crate) async fn downstream(
    env: &Env<'_>,
    txn: &Txn,
    rows: Rows,
    rejects: &[Reject],
    meta: &IngestMeta,
    watermark: Option<i64>,
    replay: bool,
) -> Result<BatchMetrics> {
    let started = Instant::now();
    let mut lap = Lap::new();
    let (lake, ctx) = (env.lake, env.ctx);
    let applied = |layer: Layer, name: &'static str| async move {
        Ok::<bool, crate::Error>(
            replay && lake.txn_version(layer, name, &txn.app_id).await?.is_some_and(|v| v >= txn.version),
        )
    };
    let mut m = BatchMetrics::default();

    // Silver: the batch's bronze rows, conformed and checked against the current masters.
    let table = &silver::usage_events::TABLE;
    let (new_rows, to_commit) = match rows {
        Rows::New(r) => (r.clone(), Some(r)),
        Rows::Committed(r) => (r, None),
    };
    let bronze_rows: u64 = new_rows.iter().map(|b| b.num_rows() as u64).sum();
    register_batches(ctx, "bronze_usage_events", bronze::bronze_schema(&usage_events::SOURCE), new_rows)?;
    let bronze = async {
        let started = Instant::now();
        if let Some(r) = to_commit {
            commit_bronze(lake, r, txn).await?;
        }
        Ok::<u64, crate::Error>(started.elapsed().as_millis() as u64)
    };
    let (bronze_ms, conformed) =
        futures::future::try_join(bronze, silver::conform_rows(ctx, table, env.silver, meta)).await?;
    let _ = ctx.deregister_table("bronze_usage_events")?;
    lap.step("bronze+conform");

    // Silver rows (written on a task of their own), quarantine, and the daily sums of the same
    // rows, concurrently: each commit records `txn` on its own.
    let silver_append = {
        let skip = conformed.rows == 0 || applied(Layer::Silver, "usage_events").await?;
        let (lake, txn) = (lake.clone(), txn.clone());
        let (rows, schema) = (conformed.clean.clone(), conformed.schema.clone());
        let (name, partitions) = (table.name, table.partitions);
        tokio::spawn(async move {
            if !skip {
                lake.append_txn(Layer::Silver, name, rows, schema, partitions, &txn).await?;
            }
            Ok::<(), crate::Error>(())
        })
    };
    let quarantined = async {
        let mut q = conformed.quarantine.clone();
        if !rejects.is_empty() {
            q.insert(0, quarantine::rejects_batch(rejects, meta)?);
        }
        let mut new_rejects = 0;
        if !q.is_empty() && !applied(Layer::Quarantine, "usage_events").await? {
            // Bronze rejects new to quarantine are counted for bronze (the others are replays).
            if !rejects.is_empty() {
                new_rejects = count_new_rejects(env, q[0].clone()).await?;
            }
            quarantine::write_txn(ctx, lake, usage_events::SOURCE.name, q, Some(txn)).await?;
        }
        Ok::<u64, crate::Error>(new_rejects)
    };
    let daily = async {
        if !replay {
            add_to_series(env, &conformed.clean).await?;
        }
        Ok(())
    };
    let (new_rejects, ()) = futures::future::try_join(quarantined, daily).await?;
    silver_append.await.map_err(|e| crate::Error::task("the silver append task", e))??;
    lap.step("silver+daily");

    m.bronze.quarantined = new_rejects;
    m.bronze.millis = bronze_ms;
    m.silver = SilverMetrics {
        table: table.name.to_string(),
        bronze_rows,
        rows: conformed.rows,
        quarantined: conformed.quarantined,
        superseded: 0,
        imputed: conformed.imputed.clone(),
        rules: conformed.outcomes.clone(),
        millis: 0,
    };
    m.corrected_keys = corrected_keys(&conformed.clean, watermark)?;
    m.silver.millis = started.elapsed().as_millis() as u64;
    tracing::debug!(steps = %lap, "Micro-batch downstream steps.");
    Ok(m)
}

/// Adds a batch's clean rows to the stream's daily series (loaded from the lake when it holds
/// none) and the rows they change to those waiting for the gold step.
async fn add_to_series(env: &Env<'_>, clean: &[RecordBatch]) -> Result<()> {
    let Held { mut series, changed } = match env.take_daily() {
        Some(held) => held,
        None => Held {
            series: DailySeries::load(env.ctx, env.lake, env.budget).await?,
            changed: Changed::default(),
        },
    };
    let added = add_events(env, &mut series, clean).await?;
    let changed = changed.union(added);
    env.keep_daily(Held { series, changed });
    Ok(())
}

/// Adds silver rows to `series` (typing its features from them when it has none yet, and
/// reading back the old days they need that it let go) and returns the rows they changed.
async fn add_events(env: &Env<'_>, series: &mut DailySeries, clean: &[RecordBatch]) -> Result<Changed> {
    let Some(events_schema) = clean.first().map(|b| b.schema()) else { return Ok(Changed::default()) };
    let read = series.load_missing(env.ctx, env.lake, clean, &env.silver.anomaly).await?;
    if read > 0 {
        tracing::debug!(rows = read, "Old daily rows read back for late events.");
    }
    let features = match series.features() {
        Some(f) => f,
        None => usage_daily::features_schema(env.ctx, events_schema).await?,
    };
    series.apply_events(clean, features, &env.silver.anomaly)
}

/// The gold step of the batches since the last one, recording `txn` (the latest of them): the
/// rows they changed in the daily table and the event marts, then `org_health`. Returns the
/// daily rows written and the marts' figures. When the changed rows are a quarter of the series
/// held or more, the daily table and the event marts are rewritten whole from the series in
/// memory (cheaper than reading most rows back to upsert them); once the series let go of old
/// days, the daily table takes them as an upsert and the marts are rebuilt from it (a catch-up's
/// late events touch every file of the marts: an upsert would copy each whole after scanning its
/// keys). Otherwise the changed rows are upserted into the daily table and the marts together.
pub(crate) async fn gold_step(env: &Env<'_>, txn: &Txn) -> Result<(u64, Vec<GoldMetrics>)> {
    let Some(Held { mut series, changed }) = env.take_daily() else { return Ok((0, vec![])) };
    series.score(&env.silver.anomaly);
    let rows = series.rows_in(&changed);
    let written = if rows == 0 {
        (0, vec![])
    } else {
        let whole = rows.saturating_mul(4) >= series.len();
        (rows as u64, write_gold(env, txn, &series, &changed, whole, true).await?)
    };
    env.keep_daily(Held { series, changed: Changed::default() });
    Ok(written)
}

/// The gold step of `tail`, the batches up to `txn` whose gold step had not finished when the
/// stream stopped (their silver rows committed): the daily series loaded from the lake take the
/// silver rows of the batches the daily table has not recorded, then the daily table (when it
/// lacked any) and every event mart and `org_health` not recording `txn` are rewritten whole
/// from them. Whole, because a mart may lack more than the daily table does.
pub(crate) async fn catch_up_gold(
    env: &Env<'_>,
    txn: &Txn,
    tail: &[Planned],
) -> Result<(u64, Vec<GoldMetrics>)> {
    const T: &str = "__stream_silver_catch_up";
    let (lake, ctx) = (env.lake, env.ctx);
    let daily_has = lake.txn_version(Layer::Silver, "usage_daily", &txn.app_id).await?.unwrap_or(0);
    let missing: Vec<String> = tail
        .iter()
        .filter(|p| p.batch > daily_has)
        .map(|p| format!("'{}'", p.run_id.replace('\'', "''")))
        .collect();
    let mut series = DailySeries::load(ctx, lake, env.budget).await?;
    let mut changed = Changed::default();
    if !missing.is_empty() && lake.register_as(ctx, Layer::Silver, "usage_events", T).await? {
        let sql = format!("SELECT * FROM {T} WHERE ingest_run_id IN ({})", missing.join(", "));
        let rows = ctx.sql(&sql).await?.collect().await;
        let _ = ctx.deregister_table(T)?;
        changed = add_events(env, &mut series, &rows?).await?;
        series.score(&env.silver.anomaly);
    }
    let gold = if series.is_empty() {
        vec![]
    } else {
        write_gold(env, txn, &series, &changed, true, daily_has < txn.version).await?
    };
    let rows = if daily_has < txn.version { series.len() as u64 } else { 0 };
    env.keep_daily(Held { series, changed: Changed::default() });
    Ok((rows, gold))
}

/// Writes the daily table (when `daily`) and the event marts from `series`: the rows of
/// `changed` upserted, or (`whole`) everything rewritten; then `org_health`. Each commit records
/// `txn`; a mart that already recorded it is left as it is. Once the series let go of old days,
/// the daily table takes `changed` as an upsert even when `whole`, and whole marts are
/// recomputed from the lake's daily table.
async fn write_gold(
    env: &Env<'_>,
    txn: &Txn,
    series: &DailySeries,
    changed: &Changed,
    whole: bool,
    daily: bool,
) -> Result<Vec<GoldMetrics>> {
    let (lake, ctx) = (env.lake, env.ctx);
    let mut lap = Lap::new();
    let mut gold = if whole && series.floor().is_none() {
        let all = series.to_batches()?;
        let schema = all[0].schema();
        register_batches(ctx, "silver_usage_daily", schema.clone(), all.clone())?;
        let write = async {
            if daily {
                lake.overwrite_txn(Layer::Silver, "usage_daily", all, schema, &[], txn).await?;
            }
            Ok::<(), crate::Error>(())
        };
        let marts = gold::rebuild_event_marts(ctx, lake, txn);
        futures::future::try_join(write, marts).await?.1
    } else {
        let affected = series.changed_batch(changed)?;
        let write = async {
            if daily && affected.num_rows() > 0 {
                let keys = ["org_id", "usage_date", "service"];
                let rows = vec![affected.clone()];
                lake.merge_txn(ctx, Layer::Silver, "usage_daily", rows, &keys, Some(txn)).await?;
            }
            Ok::<(), crate::Error>(())
        };
        if whole {
            write.await?;
            lake.register(ctx, Layer::Silver, "usage_daily").await?;
            gold::rebuild_event_marts(ctx, lake, txn).await?
        } else {
            let marts = gold::merge_event_marts(ctx, lake, (affected.schema(), vec![affected.clone()]), txn);
            let gold = futures::future::try_join(write, marts).await?.1;
            lake.register(ctx, Layer::Silver, "usage_daily").await?;
            gold
        }
    };
    lap.step("daily+marts");
    gold.extend(gold::rebuild_always(ctx, lake, txn).await?);
    // The whole table in memory is not needed once org_health is built.
    let _ = ctx.deregister_table("silver_usage_daily")?;
    lap.step("org_health");
    tracing::debug!(steps = %lap, table = series.len(), whole, "Daily table and gold.");
    Ok(gold)
}

/// Wall time of consecutive steps, for the debug log.
struct Lap {
    last: Instant,
    steps: Vec<(&'static str, u128)>,
}

impl Lap {
    fn new() -> Self {
        Lap { last: Instant::now(), steps: Vec::new() }
    }

    fn step(&mut self, name: &'static str) {
        self.steps.push((name, self.last.elapsed().as_millis()));
        self.last = Instant::now();
    }
}

impl std::fmt::Display for Lap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.steps.iter().map(|(n, ms)| format!("{n}={ms}ms")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// How many distinct (rule, record hash) of a batch's bronze rejects quarantine does not hold
/// yet (a replayed malformed line is a duplicate, not a new quarantine row).
async fn count_new_rejects(env: &Env<'_>, bronze_q: RecordBatch) -> Result<u64> {
    const REJECTS: &str = "__stream_bronze_rejects";
    const QUARANTINE: &str = "__stream_quarantine_usage_events";
    register_batches(env.ctx, REJECTS, bronze_q.schema(), vec![bronze_q])?;
    let exists =
        env.lake.register_as(env.ctx, Layer::Quarantine, usage_events::SOURCE.name, QUARANTINE).await?;
    let sql = if exists {
        format!(
            "SELECT count(*) FROM (SELECT DISTINCT rule_id, record_hash FROM {REJECTS}) c
             WHERE NOT EXISTS (SELECT 1 FROM {QUARANTINE} q WHERE q.rule_id = c.rule_id AND q.record_hash = c.record_hash)"
        )
    } else {
        format!("SELECT count(*) FROM (SELECT DISTINCT rule_id, record_hash FROM {REJECTS})")
    };
    let result = env.ctx.sql(&sql).await?.collect().await;
    let _ = env.ctx.deregister_table(REJECTS)?;
    let _ = env.ctx.deregister_table(QUARANTINE)?;
    Ok(result?
        .first()
        .map_or(0, |b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0) as u64))
}

/// Distinct (org, date, service) keys of clean rows older than the watermark.
fn corrected_keys(clean: &[RecordBatch], watermark: Option<i64>) -> Result<u64> {
    let Some(wm) = watermark else { return Ok(0) };
    let mut columns = Vec::with_capacity(clean.len());
    for b in clean {
        let s = b.schema();
        let (Ok(o), Ok(d), Ok(sv), Ok(t)) =
            (s.index_of("org_id"), s.index_of("usage_date"), s.index_of("service"), s.index_of("event_ts"))
        else {
            continue;
        };
        columns.push((cast(b.column(o), &DataType::Utf8)?, cast(b.column(sv), &DataType::Utf8)?, d, t, b));
    }
    // Keys borrow the batches' strings: no allocation per row.
    let mut keys = HashSet::new();
    for (org, svc, d, t, b) in &columns {
        let (org, svc) = (org.as_string::<i32>(), svc.as_string::<i32>());
        let date = b.column(*d).as_primitive::<datafusion::arrow::datatypes::Date32Type>();
        let ts = b.column(*t).as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            if ts.is_valid(i) && ts.value(i) < wm {
                keys.insert((
                    org.is_valid(i).then(|| org.value(i)),
                    date.is_valid(i).then(|| date.value(i)),
                    svc.is_valid(i).then(|| svc.value(i)),
                ));
            }
        }
    }
    Ok(keys.len() as u64)
}

/// A watermark as RFC 3339 text (for reports and logs).
pub fn watermark_text(wm: Option<i64>) -> Option<String> {
    wm.and_then(chrono::DateTime::from_timestamp_micros)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
