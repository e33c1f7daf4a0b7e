//! `cloudlake run`: the whole pipeline once, as a library call.
//!
//! Bronze for every source (masters and all available events), then silver (rules, quarantine,
//! daily features and anomalies), then gold (full or incremental) and its reconciliation.

use std::time::Instant;

use crate::bronze::{self, SOURCES};
use crate::config::Settings;
use crate::lake::{self, Lake};
use crate::landing::IngestMeta;
use crate::report::{RunReport, StageTiming};
use crate::telemetry::Progress;
use crate::{Error, Result};
use crate::{gold, silver};

/// A new run id: UTC start time plus a random suffix, sortable by time.
pub fn new_run_id(now: chrono::DateTime<chrono::Utc>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", now.format("%Y%m%dT%H%M%S%.3fZ"), &suffix[..8])
}

/// Runs the pipeline once and writes the run report.
pub async fn run(settings: &Settings, progress: &Progress) -> Result<RunReport> {
    let started = Instant::now();
    let now = chrono::Utc::now();
    let meta = IngestMeta { run_id: new_run_id(now), ingest_ts_micros: now.timestamp_micros() };
    let _span = tracing::info_span!("run", run_id = %meta.run_id).entered();
    if !settings.landing.is_dir() {
        return Err(Error::LandingMissing { path: settings.landing.clone(), source_name: "any".into() });
    }
    let lake = Lake::new(&settings.lake)?;
    let ctx = lake::session();
    // The last run that completed (a report is written only at the very end).
    let previous = crate::quality::latest_run(&lake).ok();

    // Discover every input first, so a missing file fails the run before anything is written.
    let mut plan = Vec::with_capacity(SOURCES.len());
    for source in SOURCES {
        plan.push((source, bronze::discover(&settings.landing, source)?));
    }

    let bronze_started = Instant::now();
    let mut bronze_metrics = Vec::with_capacity(plan.len());
    for (source, files) in &plan {
        progress.start(&format!("bronze {} ({} files)", source.name, files.len()));
        let m = bronze::ingest(&ctx, &lake, &settings.landing, source, files, &meta, settings.batch_bytes)
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
    let mut stages =
        vec![StageTiming { stage: "bronze".into(), millis: bronze_started.elapsed().as_millis() as u64 }];

    let silver_started = Instant::now();
    progress.start("silver");
    lake.register_all(&ctx).await?;
    let (silver, daily) = silver::build(&ctx, &lake, &meta, &settings.silver).await?;
    for m in &silver {
        if !m.conserved() {
            return Err(Error::Internal(format!(
                "silver {} lost track of rows: bronze {} != silver {} + quarantined {} + superseded {}",
                m.table, m.bronze_rows, m.rows, m.quarantined, m.superseded
            )));
        }
    }
    progress.done();
    stages.push(StageTiming { stage: "silver".into(), millis: silver_started.elapsed().as_millis() as u64 });

    let gold_started = Instant::now();
    progress.start("gold");
    let fingerprint = settings_fingerprint(settings);
    let mode = match previous.as_ref() {
        Some(prev)
            if !settings.full_refresh
                && prev.settings_fingerprint == fingerprint
                && gold::event_marts_exist(&lake) =>
        {
            if only_events_since(&ctx, &prev.run_id).await? {
                gold::Mode::Incremental {
                    since_run_id: prev.run_id.clone(),
                    window_days: settings.silver.anomaly.window_days,
                }
            } else {
                gold::Mode::Full
            }
        }
        _ => gold::Mode::Full,
    };
    let gold_metrics = gold::build(&ctx, &lake, &mode).await?;
    let reconciliation = gold::reconcile::reconcile(&ctx, &lake).await?;
    progress.done();
    stages.push(StageTiming { stage: "gold".into(), millis: gold_started.elapsed().as_millis() as u64 });

    let mut report = RunReport {
        run_id: meta.run_id.clone(),
        started_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        millis: started.elapsed().as_millis() as u64,
        landing: settings.landing.clone(),
        lake: lake.root().to_path_buf(),
        bronze: bronze_metrics,
        silver,
        daily,
        gold: gold_metrics,
        reconciliation,
        settings_fingerprint: fingerprint,
        stages,
        publish: None,
    };
    report.write(&lake.runs_dir())?;
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
        report.write(&lake.runs_dir())?;
    }
    Ok(report)
}

/// How many progress steps [`run`] takes with `settings`.
pub fn steps(settings: &Settings) -> u64 {
    SOURCES.len() as u64 + 2 + u64::from(settings.cassandra.is_some())
}

/// A hash of the settings that shape silver and gold: when it changes, gold is rebuilt in full.
fn settings_fingerprint(settings: &Settings) -> String {
    let text = serde_json::to_string(&settings.silver).unwrap_or_default();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// True when, since `run_id`, new usage events arrived and nothing else changed in bronze.
async fn only_events_since(ctx: &datafusion::prelude::SessionContext, run_id: &str) -> Result<bool> {
    let mut events = false;
    for source in SOURCES {
        let sql = format!("SELECT count(*) FROM bronze_{} WHERE run_id > $1", source.name);
        let batches = ctx
            .sql(&sql)
            .await?
            .with_param_values(vec![datafusion::scalar::ScalarValue::Utf8(Some(run_id.to_string()))])?
            .collect()
            .await?;
        use datafusion::arrow::array::AsArray;
        let n = batches
            .first()
            .map_or(0, |b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0));
        match (source.name == "usage_events", n > 0) {
            (true, changed) => events = changed,
            (false, true) => return Ok(false),
            (false, false) => {}
        }
    }
    Ok(events)
}
