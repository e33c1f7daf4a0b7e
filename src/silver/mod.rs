//! Silver: conformed, validated, enriched tables with declared quality rules (SPEC section 5).
//!
//! Each table lives in its own file: a SQL `select` over bronze (conformance, joins) and its
//! [`Rule`](rules::Rule)s beside it. [`build`] runs them in dependency order (organisations and
//! resources first, events last), applies the rules in one pass per table ([`rules::apply`]),
//! overwrites `silver/<table>` with the clean rows and sends violations to `quarantine/<source>`.
//! Then `silver/usage_daily` holds the daily features and anomaly scores.
//!
//! Silver is rebuilt from bronze on every batch run, so re-running over the same input gives the
//! same tables. Conservation per source: bronze rows = silver rows + quarantined + superseded
//! versions (older versions of a master record that a newer delivery replaced).

pub mod anomalies;
pub mod billing_monthly;
pub mod conform;
pub mod customers_orgs;
pub mod marketing_touches;
pub mod nps_surveys;
pub mod resources;
pub mod rules;
pub mod support_tickets;
pub mod usage_daily;
pub mod usage_events;
pub mod users;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::lake::{Lake, Layer};
use crate::landing::{IngestMeta, RECORD_HASH, SOURCE_FILE, SOURCE_LINE, record_hash};
use crate::{Error, Result, quarantine};
use anomalies::AnomalyConfig;
use rules::{Action, QUARANTINE_RULE, Rule, RuleOutcome};

/// A silver table definition.
#[derive(Debug, Clone, Copy)]
pub struct SilverTable {
    /// Table name (`silver/<name>`, SQL `silver_<name>`).
    pub name: &'static str,
    /// The bronze source it is built from (and whose quarantine receives its rejects).
    pub bronze: &'static str,
    /// SQL producing the conformed rows; columns starting with `__` are for rules only.
    pub select: fn() -> String,
    /// Quality rules, in order.
    pub rules: &'static [Rule],
    /// Partition columns.
    pub partitions: &'static [&'static str],
    /// For masters that keep only their latest version: the SQL key the versions share (over the
    /// bronze columns), used to count superseded versions independently. `None` when every bronze
    /// row is kept (usage events; organisations, which are SCD2).
    pub version_key: Option<&'static str>,
}

/// Every silver table, in build order.
pub const TABLES: &[SilverTable] = &[
    customers_orgs::TABLE,
    resources::TABLE,
    users::TABLE,
    support_tickets::TABLE,
    marketing_touches::TABLE,
    nps_surveys::TABLE,
    billing_monthly::TABLE,
    usage_events::TABLE,
];

/// Settings of the silver stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SilverSettings {
    /// Per rule id, an action that replaces the declared one.
    pub rule_actions: BTreeMap<String, Action>,
    /// Anomaly thresholds.
    pub anomaly: AnomalyConfig,
    /// Events per chunk when `silver_usage_events` is rebuilt from bronze (default
    /// [`CHUNK_EVENTS`]): the memory a rebuild holds against its speed. Tests set it low to
    /// rebuild small data in many chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_chunk_events: Option<i64>,
}

/// What silver did for one table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SilverMetrics {
    /// Table name.
    pub table: String,
    /// Rows in the bronze table it reads.
    pub bronze_rows: u64,
    /// Rows written to silver.
    pub rows: u64,
    /// Rows quarantined by silver rules (this build).
    pub quarantined: u64,
    /// Older versions replaced by a newer delivery of the same key (counted independently from
    /// bronze, so a lost row breaks conservation).
    pub superseded: u64,
    /// Values imputed, per `*_imputed` column (e.g. `unit_imputed`).
    pub imputed: Vec<(String, u64)>,
    /// Per-rule outcomes.
    pub rules: Vec<RuleOutcome>,
    /// Wall time, milliseconds.
    pub millis: u64,
}

impl SilverMetrics {
    /// bronze rows = silver rows + quarantined + superseded.
    pub fn conserved(&self) -> bool {
        self.bronze_rows == self.rows + self.quarantined + self.superseded
    }

    /// Adds another build's figures for the same table (a rebuild plus micro-batches).
    pub fn absorb(&mut self, other: &SilverMetrics) {
        self.bronze_rows += other.bronze_rows;
        self.rows += other.rows;
        self.quarantined += other.quarantined;
        self.superseded += other.superseded;
        crate::landing::add_counts(&mut self.imputed, other.imputed.clone());
        for o in &other.rules {
            match self.rules.iter_mut().find(|r| r.rule == o.rule) {
                Some(r) => {
                    r.checked += o.checked;
                    r.violations += o.violations;
                    r.action = o.action.or(r.action);
                }
                None => self.rules.push(o.clone()),
            }
        }
        self.millis += other.millis;
    }
}

/// Summary of the daily features table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DailyMetrics {
    /// (org, date, service) rows.
    pub rows: u64,
    /// Rows flagged by each method and overall.
    pub zscore_flags: u64,
    /// MAD flags.
    pub mad_flags: u64,
    /// Percentile flags.
    pub pctl_flags: u64,
    /// Anomalies (at least `min_methods` methods).
    pub anomalies: u64,
}

impl DailyMetrics {
    /// Adds another part's figures.
    pub fn absorb(&mut self, other: &DailyMetrics) {
        self.rows += other.rows;
        self.zscore_flags += other.zscore_flags;
        self.mad_flags += other.mad_flags;
        self.pctl_flags += other.pctl_flags;
        self.anomalies += other.anomalies;
    }
}

/// SQL: the latest bronze version of each key of a versioned source, as a sub-query: the rows
/// of `bronze_table` no row with the same `key` column (conformed) came after, by ingest time,
/// then file, then line. Those three identify a bronze row (every row has them; a run ingests a
/// file's line once), so each key keeps exactly one row. An anti-join, not `row_number()`: with
/// one row per key in the usual case, DataFusion's window kept state per key and took 3.4 % of a
/// scale-100 run's CPU (over 150,000 marketing touches: 0.40–0.46 s of CPU, the join 0.06 s).
pub fn current_version(bronze_table: &str, key: &str) -> String {
    format!(
        "(SELECT t.* FROM {bronze_table} t WHERE NOT EXISTS (SELECT 1 FROM {bronze_table} n
            WHERE {nk} = {tk} AND (n.ingest_ts > t.ingest_ts OR (n.ingest_ts = t.ingest_ts
                AND (n.source_file > t.source_file OR (n.source_file = t.source_file AND n.source_line > t.source_line))))))",
        nk = conform::code(&format!("n.{key}")),
        tk = conform::code(&format!("t.{key}")),
    )
}

/// Builds every silver table from the bronze tables registered in `ctx` (`bronze_<source>`):
/// the masters ([`build_masters`]), then the events and daily features in full
/// ([`rebuild_events`]).
pub async fn build(
    ctx: &SessionContext,
    lake: &Lake,
    meta: &IngestMeta,
    settings: &SilverSettings,
) -> Result<(Vec<SilverMetrics>, DailyMetrics)> {
    let mut all = build_masters(ctx, lake, meta, settings).await?;
    let (events, daily, _) =
        rebuild_events(ctx, lake, meta, settings, None, |_, _| std::future::ready(Ok(()))).await?;
    all.push(events);
    Ok((all, daily))
}

/// Builds the silver tables of the batch sources (every table but `usage_events`), in order,
/// overwriting each and registering it in `ctx`.
pub async fn build_masters(
    ctx: &SessionContext,
    lake: &Lake,
    meta: &IngestMeta,
    settings: &SilverSettings,
) -> Result<Vec<SilverMetrics>> {
    let mut all = Vec::with_capacity(TABLES.len());
    for table in TABLES.iter().filter(|t| t.name != usage_events::TABLE.name) {
        let span = tracing::info_span!("stage", stage = "silver", table = table.name);
        all.push(build_table(ctx, lake, meta, settings, table, None).instrument(span).await?);
    }
    Ok(all)
}

/// Rebuilds `silver_usage_events` from all of `bronze_usage_events`, then `silver_usage_daily`
/// in full. The streaming path adds to both instead ([`crate::stream::batch`],
/// [`usage_daily::DailySeries`]); this is for when what they were enriched with changed (a
/// master, a rule, a threshold).
/// Each overwrite records `txn` when given (the stream batches the rebuild covers).
///
/// `derive` makes the tables derived row by row from the daily rows (the event marts), a bucket
/// of daily rows at a time beside the bucket's own write: given the bucket and the mode (the
/// first replaces, the others add; with no daily row at all, an empty bucket replaces). Returns
/// what each call returned, in order.
pub async fn rebuild_events<T, F, Fut>(
    ctx: &SessionContext,
    lake: &Lake,
    meta: &IngestMeta,
    settings: &SilverSettings,
    txn: Option<&crate::lake::Txn>,
    derive: F,
) -> Result<(SilverMetrics, DailyMetrics, Vec<T>)>
where
    T: Send + 'static,
    F: Fn(RecordBatch, SaveMode) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let span = tracing::info_span!("stage", stage = "silver", table = usage_events::TABLE.name);
    let (events, mut scoring) = rebuild_event_rows(ctx, lake, meta, settings, txn).instrument(span).await?;
    // Scored a bucket of orgs at a time, each bucket written as it comes (the first replaces
    // the table, each commit records `txn`) with what `derive` makes of it. A bucket is written
    // on a task of its own while the next one is scored; each write ends before the next one
    // starts, and before an error returns (no write outlives the rebuild).
    let schema = scoring.schema();
    let mut m = DailyMetrics::default();
    let mut mode = SaveMode::Overwrite;
    let mut derived = Vec::new();
    let mut writing: Option<tokio::task::JoinHandle<Result<T>>> = None;
    let write = |bucket: RecordBatch, mode: SaveMode| {
        let also = derive(bucket.clone(), mode);
        let (lake, schema, txn) = (lake.clone(), schema.clone(), txn.cloned());
        tokio::spawn(async move {
            let daily =
                lake.save(Layer::Silver, "usage_daily", vec![bucket], schema, &[], mode, txn.as_ref());
            let (daily, also) = futures::future::join(daily, also).await;
            daily?;
            also
        })
    };
    loop {
        let next = scoring.next_bucket();
        if let Some(task) = writing.take() {
            derived.push(task.await.map_err(|e| Error::task("the daily write task", e))??);
        }
        let Some(bucket) = next? else { break };
        m.absorb(&daily_metrics(std::slice::from_ref(&bucket)));
        writing = Some(write(bucket, mode));
        mode = SaveMode::Append;
    }
    if mode == SaveMode::Overwrite {
        // No daily row: the table (and what derives from it) is replaced by an empty one.
        let task = write(RecordBatch::new_empty(schema.clone()), mode);
        derived.push(task.await.map_err(|e| Error::task("the daily write task", e))??);
    }
    lake.register(ctx, Layer::Silver, "usage_daily").await?;
    Ok((events, m, derived))
}

/// Bronze events conformed per chunk of event dates, each chunk bounded by [`CHUNK_EVENTS`]:
/// about the events of one micro-batch of the default 64 MB, so a rebuild holds what a stream
/// holds (the daily features are scored in as many buckets of orgs as there are chunks, so
/// this bounds the scoring too). Measured at scale 100 (release, 2 cores, alternating; README
/// "By scale"): 0.51-0.56 GB through the rebuild and its gold against 0.61-0.69 GB with chunks
/// of 400,000 events (five dates), for 0.5-1 s more.
pub const CHUNK_EVENTS: i64 = 216_000;

/// `silver_usage_events` rebuilt from all of `bronze_usage_events`, a chunk of event dates at a
/// time (conformance is row by row, joined with the masters, so a chunk's rows are the rows it
/// contributes to a whole-table build): each chunk is conformed, written (the first overwrites,
/// the others append, each recording `txn`), sends its violations to quarantine and adds its
/// daily features (a day's features come from its own events only), spilled to local files by
/// bucket of orgs, as many buckets as chunks (under the lake's state folder: the caller holds
/// the lake's events lock). Memory follows a chunk, not the table. Returns the
/// metrics and the scoring of the daily features.
async fn rebuild_event_rows(
    ctx: &SessionContext,
    lake: &Lake,
    meta: &IngestMeta,
    settings: &SilverSettings,
    txn: Option<&crate::lake::Txn>,
) -> Result<(SilverMetrics, usage_daily::Scoring)> {
    const ALL: &str = "__bronze_usage_events_all";
    let started = Instant::now();
    let table = &usage_events::TABLE;
    let bronze = format!("bronze_{}", table.bronze);
    let chunk_events = settings.rebuild_chunk_events.unwrap_or(CHUNK_EVENTS);
    let (chunks, bronze_rows) = date_chunks(ctx, &bronze, chunk_events).await?;
    let mut m = SilverMetrics { table: table.name.to_string(), bronze_rows, ..Default::default() };
    let provider = ctx.table_provider(bronze.as_str()).await?;
    let _ = ctx.deregister_table(ALL)?;
    ctx.register_table(ALL, provider.clone())?;
    let spill_dir = lake.state_dir().join("_spill").join("usage_daily");
    let mut features: Option<usage_daily::FeatureSpill> = None;
    let mut events_schema: Option<SchemaRef> = None;
    // A chunk in flight: its rows being written (on a task of its own), its daily features and
    // quarantine still to add. They are added while the next chunk is conformed, so the
    // Parquet encoding, the features and the next chunk's query overlap (run one after the
    // other, each step's tail left a core idle); a write starts when the one before it ended.
    let mut in_flight: Option<(Conformed, Option<tokio::task::JoinHandle<Result<()>>>)> = None;
    let result = async {
        for (i, predicate) in chunks.iter().enumerate() {
            let conformed = async {
                let view = ctx.sql(&format!("SELECT * FROM {ALL} WHERE {predicate}")).await?.into_view();
                let _ = ctx.deregister_table(bronze.as_str())?;
                ctx.register_table(bronze.as_str(), view)?;
                conform_rows(ctx, table, settings, meta).await
            };
            let previous =
                finish_chunk(ctx, lake, &mut in_flight, &spill_dir, chunks.len(), &mut features, &mut m);
            // Both end before an error returns, and `finish_chunk` waits for the write even when
            // the rest fails: no write outlives the rebuild.
            let (c, previous) = futures::future::join(conformed, previous).await;
            previous?;
            let c = c?;
            // The first chunk replaces the table (empty or not), the others add to it.
            let write = (i == 0 || c.rows > 0).then(|| {
                let mode = if i == 0 { SaveMode::Overwrite } else { SaveMode::Append };
                let (clean, schema) = (c.clean.clone(), c.schema.clone());
                let (lake, txn) = (lake.clone(), txn.cloned());
                tokio::spawn(async move {
                    lake.save(Layer::Silver, table.name, clean, schema, table.partitions, mode, txn.as_ref())
                        .await
                        .map(|_| ())
                })
            });
            events_schema = Some(c.schema.clone());
            in_flight = Some((c, write));
        }
        finish_chunk(ctx, lake, &mut in_flight, &spill_dir, chunks.len(), &mut features, &mut m).await
    }
    .await;
    let _ = ctx.deregister_table(bronze.as_str())?;
    ctx.register_table(bronze.as_str(), provider)?;
    let _ = ctx.deregister_table(ALL)?;
    result?;
    lake.register(ctx, Layer::Silver, table.name).await?;
    m.millis = started.elapsed().as_millis() as u64;
    let events_schema = events_schema.ok_or_else(|| Error::Internal("no chunk of usage events".into()))?;
    let scoring = match features {
        Some(spill) => spill.scoring(&settings.anomaly)?,
        None => {
            let schema = usage_daily::features_schema(ctx, events_schema).await?;
            usage_daily::Scoring::new(&settings.anomaly, schema, vec![])?
        }
    };
    tracing::info!(
        rows = m.rows,
        quarantined = m.quarantined,
        chunks = chunks.len(),
        millis = m.millis,
        "Silver built."
    );
    Ok((m, scoring))
}

/// Ends the chunk in `in_flight` (if any): adds its daily features to the spill, sends its
/// violations to quarantine and its metrics to `m`, and waits for its write, which ends even when
/// the rest fails.
async fn finish_chunk(
    ctx: &SessionContext,
    lake: &Lake,
    in_flight: &mut Option<(Conformed, Option<tokio::task::JoinHandle<Result<()>>>)>,
    spill_dir: &std::path::Path,
    buckets: usize,
    features: &mut Option<usage_daily::FeatureSpill>,
    m: &mut SilverMetrics,
) -> Result<()> {
    let Some((c, write)) = in_flight.take() else { return Ok(()) };
    let features_and_quarantine = async {
        chunk_features(ctx, &c, spill_dir, buckets, features).await?;
        quarantine::write(ctx, lake, usage_events::TABLE.bronze, c.quarantine.clone()).await
    };
    let written = async {
        match write {
            Some(task) => task.await.map_err(|e| Error::task("the silver write task", e))?,
            None => Ok(()),
        }
    };
    let (done, written) = futures::future::join(features_and_quarantine, written).await;
    done?;
    written?;
    m.absorb(&SilverMetrics {
        rows: c.rows,
        quarantined: c.quarantined,
        imputed: c.imputed,
        rules: c.outcomes,
        ..Default::default()
    });
    Ok(())
}

/// Adds the daily features of a chunk's clean events `c` to the spill (created by the first
/// chunk with rows, with `buckets` buckets of orgs under `spill_dir`).
async fn chunk_features(
    ctx: &SessionContext,
    c: &Conformed,
    spill_dir: &std::path::Path,
    buckets: usize,
    features: &mut Option<usage_daily::FeatureSpill>,
) -> Result<()> {
    const CHUNK: &str = "__silver_usage_events_chunk";
    if c.rows == 0 {
        return Ok(());
    }
    crate::lake::register_batches(ctx, CHUNK, c.schema.clone(), c.clean.clone())?;
    let found = ctx.sql(&usage_daily::features_sql(CHUNK)).await?.collect().await;
    let _ = ctx.deregister_table(CHUNK)?;
    for b in found? {
        let spill = match features {
            Some(spill) => spill,
            None => features.insert(usage_daily::FeatureSpill::create(spill_dir, b.schema(), buckets)?),
        };
        spill.push(&b)?;
    }
    Ok(())
}

/// SQL predicates over `event_date` that split `bronze` into chunks of at most `chunk_events`
/// rows (a single date may exceed it), the last one also taking rows without a
/// date (at least one chunk); and the table's row count.
async fn date_chunks(ctx: &SessionContext, bronze: &str, chunk_events: i64) -> Result<(Vec<String>, u64)> {
    use datafusion::arrow::datatypes::Int64Type;
    let batches = ctx
        .sql(&format!("SELECT CAST(event_date AS VARCHAR), count(*) FROM {bronze} GROUP BY 1 ORDER BY 1"))
        .await?
        .collect()
        .await?;
    let mut chunks: Vec<Vec<String>> = vec![vec![]];
    let (mut rows, mut total) = (0i64, 0i64);
    for b in &batches {
        let dates = cast(b.column(0), &DataType::Utf8)?;
        let dates = dates.as_string::<i32>();
        let counts = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            total += counts.value(i);
            if dates.is_null(i) {
                continue; // rows without a date go with the last chunk
            }
            if rows + counts.value(i) > chunk_events && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(vec![]);
                rows = 0;
            }
            rows += counts.value(i);
            if let Some(current) = chunks.last_mut() {
                current.push(format!("DATE '{}'", dates.value(i)));
            }
        }
    }
    let n = chunks.len();
    let predicates = chunks
        .into_iter()
        .enumerate()
        .map(|(i, dates)| {
            let mut parts = Vec::new();
            if !dates.is_empty() {
                parts.push(format!("event_date IN ({})", dates.join(", ")));
            }
            if i + 1 == n {
                parts.push("event_date IS NULL".to_string());
            }
            format!("({})", parts.join(" OR "))
        })
        .collect();
    Ok((predicates, total.max(0) as u64))
}

async fn build_table(
    ctx: &SessionContext,
    lake: &Lake,
    meta: &IngestMeta,
    settings: &SilverSettings,
    table: &SilverTable,
    txn: Option<&crate::lake::Txn>,
) -> Result<SilverMetrics> {
    let started = Instant::now();
    let bronze_rows = count(ctx, &format!("bronze_{}", table.bronze)).await?;
    let conformed = conform_rows(ctx, table, settings, meta).await?;
    let (clean, schema) = (conformed.clean.clone(), conformed.schema.clone());
    match txn {
        Some(t) => lake.overwrite_txn(Layer::Silver, table.name, clean, schema, table.partitions, t).await?,
        None => lake.overwrite(Layer::Silver, table.name, clean, schema, table.partitions).await?,
    };
    crate::lake::register_batches(ctx, &format!("silver_{}", table.name), conformed.schema, conformed.clean)?;
    if table.name == "customers_orgs" {
        let view = ctx.sql("SELECT DISTINCT org_id FROM silver_customers_orgs").await?.into_view();
        let _ = ctx.deregister_table("silver_orgs_current")?;
        ctx.register_table("silver_orgs_current", view)?;
    }
    quarantine::write(ctx, lake, table.bronze, conformed.quarantine).await?;

    let m = SilverMetrics {
        table: table.name.to_string(),
        bronze_rows,
        rows: conformed.rows,
        quarantined: conformed.quarantined,
        superseded: match table.version_key {
            Some(key) => bronze_rows.saturating_sub(
                count(ctx, &format!("(SELECT DISTINCT {key} FROM bronze_{})", table.bronze)).await?,
            ),
            None => 0,
        },
        imputed: conformed.imputed,
        rules: conformed.outcomes,
        millis: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        rows = m.rows,
        quarantined = m.quarantined,
        superseded = m.superseded,
        millis = m.millis,
        "Silver built."
    );
    Ok(m)
}

/// A silver table's rows computed from the bronze rows registered in `ctx`, not yet written.
#[derive(Debug)]
pub struct Conformed {
    /// Schema of the clean rows.
    pub schema: SchemaRef,
    /// Rows that passed every quarantine rule.
    pub clean: Vec<RecordBatch>,
    /// Quarantine rows (in [`quarantine::schema`]) for the rows that broke one.
    pub quarantine: Vec<RecordBatch>,
    /// Clean rows.
    pub rows: u64,
    /// Quarantined rows.
    pub quarantined: u64,
    /// Values imputed per `*_imputed` column.
    pub imputed: Vec<(String, u64)>,
    /// Per-rule outcomes.
    pub outcomes: Vec<RuleOutcome>,
}

/// Runs a table's select and rules over the `bronze_<source>` registered in `ctx` (the whole
/// table, or a micro-batch's new rows registered under that name).
pub async fn conform_rows(
    ctx: &SessionContext,
    table: &SilverTable,
    settings: &SilverSettings,
    meta: &IngestMeta,
) -> Result<Conformed> {
    let applied = rules::apply(ctx, &(table.select)(), table.rules, &settings.rule_actions).await?;
    let df_schema = applied.input_schema.clone().unwrap_or_else(Schema::empty);
    let clean: Vec<RecordBatch> = applied.clean.iter().map(strip_internal).collect::<Result<_>>()?;
    let schema = clean.first().map_or_else(|| public_schema(&df_schema, true), |b| b.schema());
    let quarantine = applied
        .quarantined
        .iter()
        .map(|b| quarantine_rows(b, table.rules, meta))
        .collect::<Result<Vec<_>>>()?;
    Ok(Conformed {
        schema,
        rows: clean.iter().map(|b| b.num_rows() as u64).sum(),
        quarantined: applied.quarantined.iter().map(|b| b.num_rows() as u64).sum(),
        imputed: count_imputed(&clean),
        clean,
        quarantine,
        outcomes: applied.outcomes,
    })
}

async fn count(ctx: &SessionContext, table: &str) -> Result<u64> {
    let b = ctx.sql(&format!("SELECT count(*) FROM {table}")).await?.collect().await?;
    Ok(b.first()
        .map(|b| b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0) as u64)
        .unwrap_or(0))
}

/// The schema without internal `__` columns (and without `dq_flags` unless `with_flags`).
fn public_schema(schema: &Schema, with_flags: bool) -> SchemaRef {
    let mut fields: Vec<_> =
        schema.fields().iter().filter(|f| !f.name().starts_with("__")).map(|f| f.as_ref().clone()).collect();
    if with_flags {
        fields.push(datafusion::arrow::datatypes::Field::new(rules::DQ_FLAGS, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// Drops `__` columns; casts `dq_flags` to Utf8 so every batch matches the declared schema.
fn strip_internal(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let keep: Vec<usize> =
        (0..batch.num_columns()).filter(|i| !schema.field(*i).name().starts_with("__")).collect();
    let b = batch.project(&keep)?;
    let mut columns = b.columns().to_vec();
    let mut fields: Vec<_> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    if let Some(i) = fields.iter().position(|f| f.name() == rules::DQ_FLAGS) {
        columns[i] = cast(&columns[i], &DataType::Utf8)?;
        fields[i] = datafusion::arrow::datatypes::Field::new(rules::DQ_FLAGS, DataType::Utf8, true);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn count_imputed(batches: &[RecordBatch]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for b in batches {
        let counts = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name().ends_with("_imputed") && f.data_type() == &DataType::Boolean)
            .map(|(i, f)| (f.name().clone(), b.column(i).as_boolean().true_count() as u64))
            .collect();
        crate::landing::add_counts(&mut out, counts);
    }
    out
}

/// Turns rows that violated a quarantine rule into quarantine-table rows.
fn quarantine_rows(batch: &RecordBatch, table_rules: &[Rule], meta: &IngestMeta) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let rule_col = cast(
        batch.column_by_name(QUARANTINE_RULE).ok_or_else(|| Error::Internal("no __rule column".into()))?,
        &DataType::Utf8,
    )?;
    let rule_ids = rule_col.as_string::<i32>();
    let reasons: Vec<String> = rule_ids
        .iter()
        .map(|id| {
            let id = id.unwrap_or_default();
            table_rules.iter().find(|r| r.id == id).map_or_else(|| id.to_string(), |r| r.reason.to_string())
        })
        .collect();
    let public = strip_internal(batch)?;
    let keep: Vec<usize> =
        (0..public.num_columns()).filter(|i| public.schema().field(*i).name() != rules::DQ_FLAGS).collect();
    let records = rules::rows_json(&public.project(&keep)?)?;
    let text = |name: &str| -> Result<Option<Arc<dyn Array>>> {
        batch.column_by_name(name).map(|c| cast(c, &DataType::Utf8)).transpose().map_err(Error::from)
    };
    let files = text(SOURCE_FILE)?;
    let lines = batch.column_by_name(SOURCE_LINE).map(|c| cast(c, &DataType::Int64)).transpose()?;
    let hashes = batch.column_by_name(RECORD_HASH).map(|c| cast(c, &DataType::Int64)).transpose()?;
    let hash_of = |i: usize| {
        hashes.as_ref().map_or_else(
            || record_hash(records[i].as_bytes()),
            |h| h.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(i),
        )
    };
    Ok(RecordBatch::try_new(
        quarantine::schema(),
        vec![
            Arc::new(StringArray::from(vec!["silver"; n])),
            Arc::new(StringArray::from_iter(rule_ids.iter())),
            Arc::new(StringArray::from_iter_values(reasons.iter())),
            Arc::new(StringArray::from_iter_values(records.iter())),
            match files {
                Some(f) => f,
                None => Arc::new(StringArray::new_null(n)),
            },
            match lines {
                Some(l) => l,
                None => Arc::new(Int64Array::new_null(n)),
            },
            Arc::new(StringArray::from(vec![meta.run_id.as_str(); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![meta.ingest_ts_micros; n]).with_timezone("UTC")),
            Arc::new(Int64Array::from_iter_values((0..n).map(hash_of))),
        ],
    )?)
}

/// Counts rows and flags of daily feature rows.
pub fn daily_metrics(batches: &[RecordBatch]) -> DailyMetrics {
    let mut m = DailyMetrics::default();
    for b in batches {
        let t = |name: &str| b.column_by_name(name).map_or(0, |c| c.as_boolean().true_count() as u64);
        m.rows += b.num_rows() as u64;
        m.zscore_flags += t("zscore_flag");
        m.mad_flags += t("mad_flag");
        m.pctl_flags += t("pctl_flag");
        m.anomalies += t("is_anomaly");
    }
    m
}
