//! `silver_usage_daily`: daily features per (org, usage_date, service) with the three anomaly
//! scores of [`super::anomalies`], every score and flag kept.
//!
//! Features: cost_usd, requests, cpu_hours, storage_gb_hours (sums of `value` by metric),
//! genai_tokens, carbon_kg, events. Every sum is an exact decimal (6 places), so the result does
//! not depend on the order rows are added in: re-runs and incremental merges give identical
//! marts. A rebuild aggregates with [`features_sql`] in DataFusion; a stream adds each
//! micro-batch to the series it holds in memory ([`DailySeries`]). The trailing baseline
//! statistics (medians, MAD, percentiles over a moving window) run in Rust.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    UInt32Array,
};
use datafusion::arrow::compute::{SortOptions, cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::prelude::SessionContext;

use super::anomalies::{AnomalyConfig, Score, score_series};
use crate::Result;
use crate::bronze::MONEY_SCALE;

mod series;
pub use series::{Changed, DailySeries, floor_within};

/// The daily feature query over `relation` (silver usage events, or a subset of them).
pub fn features_sql(relation: &str) -> String {
    format!(
        "SELECT org_id, usage_date, service,
        CAST(sum(cost_usd) AS DECIMAL(18, 6)) AS cost_usd,
        CAST(COALESCE(sum(CASE WHEN metric = 'requests' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS requests,
        CAST(COALESCE(sum(CASE WHEN metric = 'cpu_hours' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS cpu_hours,
        CAST(COALESCE(sum(CASE WHEN metric = 'storage_gb_hours' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS storage_gb_hours,
        COALESCE(sum(genai_tokens), 0) AS genai_tokens,
        CAST(COALESCE(sum(CAST(carbon_kg AS DECIMAL(18, 6))), 0) AS DECIMAL(18, 6)) AS carbon_kg,
        count(*) AS events
    FROM {relation}
    GROUP BY org_id, usage_date, service"
    )
}

/// Scores daily features (the rows of [`features_sql`], in any order, each (org, date, service)
/// once) in one go: [`Scoring`] collected, what the tests compare against; a rebuild writes the
/// buckets of [`Scoring`] as they come.
#[cfg(test)]
pub(crate) fn score(
    cfg: &AnomalyConfig,
    schema: SchemaRef,
    features: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut scoring = Scoring::new(cfg, schema, features)?;
    let mut out = Vec::new();
    while let Some(b) = scoring.next_bucket()? {
        out.push(b);
    }
    Ok((scoring.schema(), out))
}

/// The schema of [`features_sql`]'s rows over silver events of schema `events` (planned over
/// an empty table, not run).
pub async fn features_schema(ctx: &SessionContext, events: SchemaRef) -> Result<SchemaRef> {
    const EMPTY: &str = "__usage_daily_empty_events";
    crate::lake::register_batches(ctx, EMPTY, events, vec![])?;
    let planned =
        ctx.sql(&features_sql(EMPTY)).await.map(|df| Arc::new(df.schema().as_arrow().clone()) as SchemaRef);
    let _ = ctx.deregister_table(EMPTY)?;
    Ok(planned?)
}

/// At most this many daily rows are sorted and scored at once.
pub const BUCKET_ROWS: usize = 200_000;

/// The daily features of a whole table scored a bucket of orgs at a time: the features are
/// split by a hash of `org_id` (a series never spans two buckets), and each bucket is sorted by
/// (org, service, date), scored and handed out, then dropped. Memory follows one bucket, not
/// the table, when the buckets were spilled to files ([`FeatureSpill`]).
pub struct Scoring {
    cfg: AnomalyConfig,
    schema: SchemaRef,
    /// Buckets not yet scored, last first.
    buckets: Vec<Bucket>,
    /// Where spilled buckets live (removed when the scoring is dropped).
    _spill: Option<tempfile::TempDir>,
}

enum Bucket {
    Held(Vec<RecordBatch>),
    Spilled(std::path::PathBuf),
}

impl Scoring {
    /// Splits `features` (of `schema`, the [`features_sql`] columns) into buckets in memory.
    pub fn new(cfg: &AnomalyConfig, schema: SchemaRef, features: Vec<RecordBatch>) -> Result<Self> {
        Self::with_bucket_rows(cfg, schema, features, BUCKET_ROWS)
    }

    /// [`Scoring::new`] with buckets of about `bucket_rows` rows.
    pub fn with_bucket_rows(
        cfg: &AnomalyConfig,
        schema: SchemaRef,
        features: Vec<RecordBatch>,
        bucket_rows: usize,
    ) -> Result<Self> {
        let rows: usize = features.iter().map(|b| b.num_rows()).sum();
        let count = rows.div_ceil(bucket_rows.max(1)).max(1);
        let mut buckets: Vec<Vec<RecordBatch>> = vec![Vec::new(); count];
        for batch in features {
            for (bucket, part) in buckets.iter_mut().zip(split_by_org(&batch, count)?) {
                if part.num_rows() > 0 {
                    bucket.push(part);
                }
            }
        }
        let buckets = buckets.into_iter().map(Bucket::Held).collect();
        Ok(Scoring { cfg: *cfg, schema: scored_schema(&schema)?, buckets, _spill: None })
    }

    /// The scored rows' schema: the feature columns, then [`score_columns`].
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next bucket, sorted and scored; `None` when every bucket was handed out.
    pub fn next_bucket(&mut self) -> Result<Option<RecordBatch>> {
        while let Some(bucket) = self.buckets.pop() {
            let part = match bucket {
                Bucket::Held(part) => part,
                Bucket::Spilled(path) => {
                    let file = std::fs::File::open(&path).map_err(|e| crate::Error::io(&path, e))?;
                    let part =
                        FileReader::try_new(file, None)?.collect::<std::result::Result<Vec<_>, _>>()?;
                    let _ = std::fs::remove_file(&path);
                    part
                }
            };
            if part.iter().all(|b| b.num_rows() == 0) {
                continue;
            }
            return score_bucket(&self.cfg, &self.schema, part).map(Some);
        }
        Ok(None)
    }
}

fn scored_schema(features: &SchemaRef) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = features.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(score_columns(&[])?.into_iter().map(|(f, _)| f));
    Ok(Arc::new(Schema::new(fields)))
}

/// `batch`'s rows split into `count` parts by a hash of `org_id` (its first column).
fn split_by_org(batch: &RecordBatch, count: usize) -> Result<Vec<RecordBatch>> {
    if count <= 1 {
        return Ok(vec![batch.clone()]);
    }
    let org = cast(batch.column(0), &DataType::Utf8)?;
    let org = org.as_string::<i32>();
    // The rows of each part, gathered in one pass (a filter per part would read them all each time).
    let mut rows: Vec<Vec<u32>> = vec![Vec::with_capacity(batch.num_rows() / count + 1); count];
    for i in 0..batch.num_rows() {
        rows[xxhash_rust::xxh3::xxh3_64(org.value(i).as_bytes()) as usize % count].push(i as u32);
    }
    rows.into_iter().map(|r| Ok(take_record_batch(batch, &UInt32Array::from(r))?)).collect()
}

/// The daily features of a rebuild written to local files, a file per bucket of orgs, as the
/// chunks of events produce them: the rebuild then holds one chunk's features, not the
/// table's. [`FeatureSpill::scoring`] scores them a bucket at a time.
pub struct FeatureSpill {
    schema: SchemaRef,
    spill: tempfile::TempDir,
    writers: Vec<FileWriter<std::io::BufWriter<std::fs::File>>>,
}

impl FeatureSpill {
    /// Files for `buckets` buckets of features of `schema`, in a new folder inside `root`
    /// (whose older folders, left by a killed run, are removed first).
    pub fn create(root: &std::path::Path, schema: SchemaRef, buckets: usize) -> Result<Self> {
        if root.is_dir() {
            std::fs::remove_dir_all(root).map_err(|e| crate::Error::io(root, e))?;
        }
        std::fs::create_dir_all(root).map_err(|e| crate::Error::io(root, e))?;
        let spill = tempfile::tempdir_in(root).map_err(|e| crate::Error::io(root, e))?;
        let writers = (0..buckets.max(1))
            .map(|k| {
                let path = bucket_path(&spill, k);
                let file = std::fs::File::create(&path).map_err(|e| crate::Error::io(&path, e))?;
                Ok(FileWriter::try_new(std::io::BufWriter::new(file), &schema)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FeatureSpill { schema, spill, writers })
    }

    /// Adds features (rows of [`features_sql`], each (org, date, service) once in the rebuild).
    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let parts = split_by_org(batch, self.writers.len())?;
        for (writer, part) in self.writers.iter_mut().zip(parts) {
            if part.num_rows() > 0 {
                writer.write(&part)?;
            }
        }
        Ok(())
    }

    /// Closes the files; the scoring reads and removes them a bucket at a time.
    pub fn scoring(self, cfg: &AnomalyConfig) -> Result<Scoring> {
        let mut buckets = Vec::with_capacity(self.writers.len());
        for (k, mut writer) in self.writers.into_iter().enumerate() {
            writer.finish()?;
            buckets.push(Bucket::Spilled(bucket_path(&self.spill, k)));
        }
        Ok(Scoring { cfg: *cfg, schema: scored_schema(&self.schema)?, buckets, _spill: Some(self.spill) })
    }
}

/// Bucket `k`'s file in a spill folder.
fn bucket_path(spill: &tempfile::TempDir, k: usize) -> std::path::PathBuf {
    spill.path().join(format!("bucket-{k:04}.arrow"))
}

/// Sorts one bucket's features by (org, service, date) and appends their scores.
fn score_bucket(cfg: &AnomalyConfig, schema: &SchemaRef, part: Vec<RecordBatch>) -> Result<RecordBatch> {
    let features = concat_batches(&part[0].schema(), &part)?;
    drop(part);
    // By org, service and date, nulls last. Sorted on Arrow's row format (one byte comparison
    // a pair): comparing the columns one by one took 0.27 s at scale 100, on the thread that
    // hands out the buckets.
    let last = SortOptions { descending: false, nulls_first: false };
    let keys = [0, 2, 1];
    let converter = RowConverter::new(
        keys.iter()
            .map(|&c| SortField::new_with_options(features.column(c).data_type().clone(), last))
            .collect(),
    )?;
    let rows =
        converter.convert_columns(&keys.iter().map(|&c| features.column(c).clone()).collect::<Vec<_>>())?;
    let mut order: Vec<u32> = (0..features.num_rows() as u32).collect();
    order.sort_unstable_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    drop(rows);
    let features = take_record_batch(&features, &UInt32Array::from(order))?;
    let n = features.num_rows();

    let org = cast(features.column(0), &DataType::Utf8)?;
    let org = org.as_string::<i32>();
    let service = cast(features.column(2), &DataType::Utf8)?;
    let service = service.as_string::<i32>();
    let date = features.column(1).as_primitive::<Date32Type>();
    let cost = features.column(3).as_primitive::<Decimal128Type>();
    let scale = 10f64.powi(MONEY_SCALE as i32);
    // Series boundaries, then the series scored on every core (each independently).
    let same = |a: usize, b: usize| {
        org.is_null(a) == org.is_null(b)
            && org.value(a) == org.value(b)
            && service.is_null(a) == service.is_null(b)
            && service.value(a) == service.value(b)
    };
    let mut bounds = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && same(start, end) {
            end += 1;
        }
        bounds.push((start, end));
        start = end;
    }
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let share = bounds.len().div_ceil(cores).max(1);
    let parts = crate::parallel::map(bounds.chunks(share).collect(), |part| {
        let mut out = Vec::new();
        for &(start, end) in part {
            let days: Vec<(i32, f64)> =
                (start..end).map(|i| (date.value(i), cost.value(i) as f64 / scale)).collect();
            out.extend(score_series(&days, cfg));
        }
        Ok(out)
    })?;
    let scores: Vec<Score> = parts.into_iter().flatten().collect();
    let mut columns: Vec<ArrayRef> = features.columns().to_vec();
    columns.extend(score_columns(&scores)?.into_iter().map(|(_, a)| a));
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The score columns of `silver_usage_daily`, after its feature columns, for `scores` in row
/// order (one definition for a rebuild, a micro-batch and the in-memory series).
pub(crate) fn score_columns(scores: &[Score]) -> Result<Vec<(Field, ArrayRef)>> {
    let scale = 10f64.powi(MONEY_SCALE as i32);
    let baseline = Decimal128Array::from_iter(
        scores.iter().map(|s| s.baseline_mean.map(|m| (m * scale).round() as i128)),
    )
    .with_precision_and_scale(18, MONEY_SCALE)?;
    Ok(vec![
        (
            Field::new("baseline_days", DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(scores.iter().map(|s| s.baseline_days as i64))),
        ),
        (Field::new("baseline_cost_usd", DataType::Decimal128(18, MONEY_SCALE), true), Arc::new(baseline)),
        (
            Field::new("zscore", DataType::Float64, true),
            Arc::new(Float64Array::from_iter(scores.iter().map(|s| s.zscore))),
        ),
        (
            Field::new("mad_score", DataType::Float64, true),
            Arc::new(Float64Array::from_iter(scores.iter().map(|s| s.mad_score))),
        ),
        (
            Field::new("pctl_ratio", DataType::Float64, true),
            Arc::new(Float64Array::from_iter(scores.iter().map(|s| s.pctl_ratio))),
        ),
        (
            Field::new("zscore_flag", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.zscore_flag)))),
        ),
        (
            Field::new("mad_flag", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.mad_flag)))),
        ),
        (
            Field::new("pctl_flag", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.pctl_flag)))),
        ),
        (
            Field::new("methods_flagged", DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(scores.iter().map(|s| s.methods_flagged as i64))),
        ),
        (
            Field::new("is_anomaly", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.is_anomaly)))),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, StringArray};

    fn features(rows: &[(&str, i32, Option<&str>, i128)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("org_id", DataType::Utf8, true),
            Field::new("usage_date", DataType::Date32, true),
            Field::new("service", DataType::Utf8, true),
            Field::new("cost_usd", DataType::Decimal128(18, MONEY_SCALE), true),
        ]));
        let cost = Decimal128Array::from_iter_values(rows.iter().map(|r| r.3))
            .with_precision_and_scale(18, MONEY_SCALE)
            .unwrap();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
                Arc::new(cost),
            ],
        )
        .unwrap()
    }

    fn lines(batches: &[RecordBatch]) -> Vec<String> {
        let text = datafusion::arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string();
        let mut lines: Vec<String> =
            text.lines().filter(|l| l.starts_with("| ")).map(str::to_string).collect();
        lines.sort();
        lines
    }

    #[test]
    fn scoring_in_small_buckets_equals_scoring_at_once() {
        // Unordered days of several series over two input batches, with a spike and a null service.
        let mut rows = Vec::new();
        for org in ["org_a", "org_b", "org_c", "org_d", "org_e"] {
            for service in [Some("compute"), Some("genai"), None] {
                for day in (0..30).rev() {
                    let cost =
                        if day == 25 && org == "org_b" { 90_000_000 } else { 1_000_000 + day as i128 * 1000 };
                    rows.push((org, 19_000 + day, service, cost));
                }
            }
        }
        let (a, b) = rows.split_at(200);
        let cfg = AnomalyConfig::default();
        let once = features(a).schema();
        let (_, whole) = score(&cfg, once.clone(), vec![features(a), features(b)]).unwrap();
        assert_eq!(whole.len(), 1);
        let mut parts = Scoring::with_bucket_rows(&cfg, once, vec![features(a), features(b)], 100).unwrap();
        let mut buckets = Vec::new();
        while let Some(bucket) = parts.next_bucket().unwrap() {
            buckets.push(bucket);
        }
        assert!(buckets.len() > 1, "{} buckets", buckets.len());
        assert_eq!(buckets.iter().map(|b| b.num_rows()).sum::<usize>(), rows.len());
        assert_eq!(lines(&buckets), lines(&whole));
        assert!(daily_flags(&whole) > 0, "the spike is flagged");

        // Spilled to files by bucket, chunk after chunk: the same rows and scores.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spill");
        let mut spill = FeatureSpill::create(&dir, features(a).schema(), 3).unwrap();
        spill.push(&features(a)).unwrap();
        spill.push(&features(b)).unwrap();
        let mut scoring = spill.scoring(&cfg).unwrap();
        let mut spilled = Vec::new();
        while let Some(bucket) = scoring.next_bucket().unwrap() {
            spilled.push(bucket);
        }
        assert_eq!(spilled.len(), 3);
        assert_eq!(lines(&spilled), lines(&whole));
        drop(scoring);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the spill folder is removed");
    }

    fn daily_flags(batches: &[RecordBatch]) -> usize {
        batches.iter().map(|b| b.column_by_name("is_anomaly").unwrap().as_boolean().true_count()).sum()
    }
}
