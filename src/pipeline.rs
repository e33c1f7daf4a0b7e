//! `cloudlake run`: the whole pipeline once, as a library call.
//!
//! Batch sources through bronze and silver, a full rebuild of the event tables when what they
//! depend on changed (or after a backfill), the usage events through the streaming micro-batch
//! path, then reconciliation (see [`run`]). Silver and gold run in this process or, with
//! `--ballista`, on a Ballista cluster ([`crate::cluster`]).

use std::time::Instant;

use tracing::Instrument;

use crate::bronze::{self, SOURCES, usage_events};
use crate::config::Settings;
use crate::lake::{self, Lake, Layer, Txn};
use crate::landing::IngestMeta;
use crate::report::{RunReport, StageTiming};
use crate::silver::SilverMetrics;
use crate::stream::{self, StreamOptions, StreamSource};
use crate::telemetry::Progress;
use crate::{Error, Result};
use crate::{gold, silver};

/// A `run` backfills when the unread event files fill at least this many micro-batches (and
/// at least double what the lake read before).
pub const BACKFILL_BATCHES: u64 = 4;

/// A new run id: UTC start time plus a random suffix, sortable by time.
pub fn new_run_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), &suffix[..8])
}

/// Runs the pipeline once and writes the run report.
///
/// 1. bronze for the batch sources (masters, billing, tickets, ...);
/// 2. silver for them;
/// 3. on a cluster, or when the unread event files are a large catch-up (see
///    [`BACKFILL_BATCHES`]): a backfill, the events landed in bronze micro-batch by micro-batch
///    (the stream's path, `bronze_only`, batches of `batch_mb` as in a stream, so that memory
///    follows `batch_mb` whatever the scale), while 1 and 2 run;
/// 4. after a backfill, or when a master, a setting or the code's tables changed since the last
///    run (or on the first run, or with `--full`): silver events, daily features and every gold
///    mart rebuilt from bronze ([`rebuild_event_tables`]);
/// 5. without a backfill, the usage events through the streaming path ([`crate::stream`],
///    `--once` over the landing files): each micro-batch lands in bronze, silver and the daily
///    features, and MERGEs into the event marts;
/// 6. reconciliation, the run report, and publishing when Cassandra is configured.
pub async fn run(settings: &Settings, progress: &Progress) -> Result<RunReport> {
    let now = chrono::Utc::now();
    let meta = IngestMeta { run_id: new_run_id(now), ingest_ts_micros: now.timestamp_micros() };
    let span = tracing::info_span!("run", run_id = %meta.run_id);
    run_as(settings, progress, now, meta).instrument(span).await
}

/// [`run`] under the run id of `meta`, started at `now`.
async fn run_as(
    settings: &Settings,
    progress: &Progress,
    now: chrono::DateTime<chrono::Utc>,
    meta: IngestMeta,
) -> Result<RunReport> {
    let started = Instant::now();
    if !settings.landing.is_dir() {
        return Err(Error::LandingMissing { path: settings.landing.clone(), source_name: "any".into() });
    }
    let lake = Lake::new(&settings.lake)?;
    let _lock = stream::checkpoint::lock(&lake)?;
    let ctx = lake::session();
    // Where silver and gold run: here, or on a Ballista cluster.
    let cluster = match &settings.ballista {
        Some(url) => Some(crate::cluster::connect(url, &lake).await?),
        None => None,
    };
    let sctx = cluster.as_ref().unwrap_or(&ctx);
    // The last run that completed (a report is written only at the very end).
    let previous = crate::quality::latest_run(&lake).await.ok();

    // Discover every input first, so a missing file fails the run before anything is written.
    let mut plan = Vec::with_capacity(SOURCES.len());
    for source in SOURCES {
        let files = bronze::discover(&settings.landing, source)?;
        if source.name != usage_events::SOURCE.name {
            plan.push((source, files));
        }
    }

    let events = &usage_events::SOURCE;
    if lake.open(Layer::Bronze, events.name).await?.is_none() {
        // First run: the events table exists (empty) before anything reads it.
        let (schema, partitions) = (bronze::bronze_schema(events), bronze::partition_columns(events));
        lake.overwrite(Layer::Bronze, events.name, vec![], schema, &partitions).await?;
    }
    // A backfill (the events land in bronze first, then silver and gold are rebuilt from bronze
    // in full) on a cluster, or when the new event files at least double what the lake holds
    // and fill several batches: then one rebuild costs less than merging batch after batch into
    // tables that every batch of unordered events touches throughout.
    let (unread, read) = stream::file_backlog(settings, &lake).await?;
    let backfill = cluster.is_some() || (unread >= BACKFILL_BATCHES * settings.batch_bytes && unread >= read);

    // The batch sources through bronze and silver.
    let masters = async {
        let bronze_started = Instant::now();
        let mut bronze_metrics = Vec::with_capacity(SOURCES.len());
        for (source, files) in &plan {
            progress.start(&format!("bronze {} ({} files)", source.name, files.len()));
            let m =
                bronze::ingest(&ctx, &lake, &settings.landing, source, files, &meta, settings.batch_bytes)
                    .await?;
            if !m.conserved() {
                return Err(Error::Internal(format!(
                    "bronze {} lost track of records: read {} != written {} + quarantined {} + duplicates {}",
                    m.source, m.read, m.written, m.quarantined, m.duplicates
                )));
            }
            bronze_metrics.push(m);
            progress.done();
        }
        let bronze_millis = bronze_started.elapsed().as_millis() as u64;
        let silver_started = Instant::now();
        progress.start("silver");
        lake.register_all(sctx).await?;
        let silver = silver::build_masters(sctx, &lake, &meta, &settings.silver).await?;
        for m in &silver {
            check_silver(m)?;
        }
        progress.done();
        Ok((bronze_metrics, bronze_millis, silver, silver_started.elapsed().as_millis() as u64))
    };
    // A backfill's events into bronze: they need no master (silver enriches them later), so they
    // land beside the masters, whose bronze and silver leave most of a core idle. On a task of
    // their own: joined on this one, the masters' CPU work (parsing, planning) held up the
    // batches' next step, and the other way round, with a core idle meanwhile. (A thread that
    // drives the future itself: the stream's future is not provably `Send` for `spawn`.)
    let backfill_task = backfill.then(|| {
        progress.start("usage events to bronze (micro-batches)");
        let (settings, lake) = (settings.clone(), lake.clone());
        let (runtime, span) = (tokio::runtime::Handle::current(), tracing::Span::current());
        tokio::task::spawn_blocking(move || {
            runtime.block_on(
                async {
                    let started = Instant::now();
                    let options = StreamOptions { once: true, bronze_only: true, ..Default::default() };
                    let streamed =
                        stream::run_locked(&settings, &lake, &StreamSource::Files, &options, &|_| {}).await?;
                    Ok::<_, Error>((streamed, started.elapsed().as_millis() as u64))
                }
                .instrument(span),
            )
        })
    });
    let backfill_events = async {
        let Some(task) = backfill_task else { return Ok(None) };
        let streamed = task.await.map_err(|e| Error::task("the backfill", e))??;
        progress.done();
        Ok::<_, Error>(Some(streamed))
    };
    // Both end before an error returns: no write outlives the run.
    let (masters, backfilled) = futures::future::join(masters, backfill_events).await;
    let (mut bronze_metrics, bronze_millis, mut silver, mut silver_millis) = masters?;
    let backfilled = backfilled?;
    // Stages may overlap: a backfill's events land while the masters go through bronze and silver.
    let mut stages = vec![StageTiming { stage: "bronze".into(), millis: bronze_millis }];
    let mut events_millis = 0;
    let mut streamed = None;
    if let Some((s, millis)) = backfilled {
        lake.register(sctx, Layer::Bronze, usage_events::SOURCE.name).await?;
        events_millis += millis;
        streamed = Some(s);
    }
    let fingerprint = settings_fingerprint(settings);
    let rebuild = match previous.as_ref() {
        _ if backfill || stream::rebuild_pending(&lake) => true,
        Some(prev) if !settings.full_refresh && prev.settings_fingerprint == fingerprint => {
            !gold::event_marts_exist(&lake).await?
                || !lake.exists(Layer::Silver, "usage_daily").await?
                || masters_changed_since(&ctx, &prev.run_id).await?
        }
        _ => true,
    };
    let mut events_silver = SilverMetrics { table: usage_events::SOURCE.name.into(), ..Default::default() };
    let mut gold_metrics = Vec::new();
    if rebuild {
        progress.start(if cluster.is_some() {
            "silver and gold (Ballista)"
        } else {
            "silver events and gold"
        });
        let started = Instant::now();
        (events_silver, gold_metrics) = rebuild_event_tables(sctx, &lake, &meta, &settings.silver).await?;
        silver_millis += started.elapsed().as_millis() as u64;
        progress.done();
    }
    stages.push(StageTiming { stage: "silver".into(), millis: silver_millis });

    let streamed = match streamed {
        Some(s) => s,
        None => {
            let started = Instant::now();
            progress.start("usage events (micro-batches: bronze, silver, gold)");
            let options = StreamOptions { once: true, ..Default::default() };
            let s = stream::run_locked(settings, &lake, &StreamSource::Files, &options, &|_| {}).await?;
            progress.done();
            events_millis += started.elapsed().as_millis() as u64;
            s
        }
    };
    let mut events_bronze = streamed.totals.bronze.clone();
    events_bronze.source = usage_events::SOURCE.name.into();
    bronze_metrics.push(events_bronze);
    events_silver.absorb(&streamed.totals.silver);
    events_silver.table = usage_events::SOURCE.name.into();
    silver.push(events_silver);
    for g in &streamed.totals.gold {
        match gold_metrics.iter_mut().find(|m: &&mut gold::GoldMetrics| m.mart == g.mart) {
            Some(m) => m.absorb(g),
            None => gold_metrics.push(g.clone()),
        }
    }
    stages.push(StageTiming { stage: "events".into(), millis: events_millis });

    let gold_started = Instant::now();
    progress.start("gold reconciliation");
    let fresh = lake::session();
    lake.register_all(&fresh).await?;
    let (daily, reconciliation) =
        futures::future::try_join(daily_summary(&fresh), gold::reconcile::reconcile(&fresh, &lake)).await?;
    progress.done();
    stages.push(StageTiming { stage: "gold".into(), millis: gold_started.elapsed().as_millis() as u64 });

    let mut report = RunReport {
        run_id: meta.run_id.clone(),
        started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        millis: started.elapsed().as_millis() as u64,
        landing: settings.landing.clone(),
        lake: std::path::PathBuf::from(lake.location()),
        bronze: bronze_metrics,
        silver,
        daily,
        gold: gold_metrics,
        reconciliation,
        settings_fingerprint: fingerprint,
        stages,
        stream: Some(streamed),
        publish: None,
    };
    report.write(&lake).await?;
    if let Some(config) = &settings.cassandra {
        // The lake run is complete and recorded; a publish failure leaves it valid, and
        // `cloudlake publish` (or the next run) publishes it again.
        let publish_started = Instant::now();
        progress.start("publish to Cassandra");
        let cassandra = crate::serving::cassandra::Cassandra::connect(config).await?;
        report.publish = Some(crate::serving::cassandra::publish::publish(&lake, &cassandra).await?);
        progress.done();
        report.stages.push(StageTiming {
            stage: "publish".into(),
            millis: publish_started.elapsed().as_millis() as u64,
        });
        report.write(&lake).await?;
    }
    Ok(report)
}

/// Rebuilds `silver_usage_events`, `silver_usage_daily` and every gold mart from bronze, in
/// `ctx` (local, or a cluster's), which holds the lake's tables and the silver masters. Each
/// commit covers every batch the streams committed to bronze, so none is applied again. The
/// rebuild is marked pending while it runs (several commits), so if the process dies the next
/// stream or run of the lake rebuilds again; then the backfill batches it covered are done.
pub async fn rebuild_event_tables(
    ctx: &datafusion::prelude::SessionContext,
    lake: &Lake,
    meta: &IngestMeta,
    settings: &silver::SilverSettings,
) -> Result<(SilverMetrics, Vec<gold::GoldMetrics>)> {
    stream::mark_rebuild_pending(lake)?;
    let covers = Txn::covering(stream::committed_batches(lake).await?);
    let built = if crate::cluster::of(ctx).is_none() {
        // Locally the event marts are made from each bucket of daily rows as it is written
        // (beside the scoring of the next), rather than read back from the daily table after.
        let derive =
            |daily, mode| gold::build_event_marts_of(ctx.clone(), lake.clone(), daily, mode, covers.clone());
        // The batch marts read only batch sources' silver tables: they are built beside the
        // events rather than after them, in the run's last seconds.
        let events = silver::rebuild_events(ctx, lake, meta, settings, covers.as_ref(), derive);
        let batch = gold::build_marts(ctx, lake, covers.as_ref(), |mart| mart.scope == gold::Scope::Batch);
        // Both end before an error returns: no write outlives the rebuild.
        let (events, batch) = futures::future::join(events, batch).await;
        let (m, _, buckets) = events?;
        let batch = batch?;
        check_silver(&m)?;
        let always =
            gold::build_marts(ctx, lake, covers.as_ref(), |mart| mart.scope == gold::Scope::Always).await?;
        (m, gold::in_build_order(buckets.into_iter().flatten().chain(batch).chain(always)))
    } else {
        let nothing = |_, _| std::future::ready(Ok(()));
        let (m, _, _) = silver::rebuild_events(ctx, lake, meta, settings, covers.as_ref(), nothing).await?;
        check_silver(&m)?;
        (m, gold::build(ctx, lake, covers.as_ref()).await?)
    };
    stream::mark_rebuilt(lake, &StreamSource::Files).await?;
    Ok(built)
}

fn check_silver(m: &SilverMetrics) -> Result<()> {
    if m.conserved() {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "silver {} lost track of rows: bronze {} != silver {} + quarantined {} + superseded {}",
        m.table, m.bronze_rows, m.rows, m.quarantined, m.superseded
    )))
}

/// Rows and flags of `silver_usage_daily`.
async fn daily_summary(ctx: &datafusion::prelude::SessionContext) -> Result<silver::DailyMetrics> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let b = ctx
        .sql(
            "SELECT count(*), count(*) FILTER (WHERE zscore_flag), count(*) FILTER (WHERE mad_flag),
                    count(*) FILTER (WHERE pctl_flag), count(*) FILTER (WHERE is_anomaly)
             FROM silver_usage_daily",
        )
        .await?
        .collect()
        .await?;
    let v = |i: usize| b.first().map_or(0, |b| b.column(i).as_primitive::<Int64Type>().value(0) as u64);
    Ok(silver::DailyMetrics {
        rows: v(0),
        zscore_flags: v(1),
        mad_flags: v(2),
        pctl_flags: v(3),
        anomalies: v(4),
    })
}

/// How many progress steps [`run`] takes with `settings`.
pub fn steps(settings: &Settings) -> u64 {
    SOURCES.len() as u64 + 3 + u64::from(settings.cassandra.is_some())
}

/// A hash of the settings that shape silver and gold: when it changes, gold is rebuilt in full.
fn settings_fingerprint(settings: &Settings) -> String {
    let text = serde_json::to_string(&settings.silver).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// True when a batch source (not the usage events) got new bronze rows since `run_id`.
async fn masters_changed_since(ctx: &datafusion::prelude::SessionContext, run_id: &str) -> Result<bool> {
    use datafusion::arrow::array::AsArray;
    for source in SOURCES.iter().filter(|s| s.name != usage_events::SOURCE.name) {
        let sql = format!("SELECT count(*) FROM bronze_{} WHERE run_id > $1", source.name);
        let batches = ctx
            .sql(&sql)
            .await?
            .with_param_values(vec![datafusion::scalar::ScalarValue::Utf8(Some(run_id.to_string()))])?
            .collect()
            .await?;
        let n = batches
            .first()
            .map_or(0, |b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0));
        if n > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}
