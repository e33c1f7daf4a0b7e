//! Bronze: typed, deduplicated landing data with ingest metadata (SPEC section 4).
//!
//! One file per source declares its columns, types and natural key ([`Source`]); [`ingest`] is
//! the one generic path that lands any of them:
//!
//! 1. discover the source's landing files and cut them into micro-batches of bounded size;
//! 2. read each batch's files in parallel ([`crate::landing`]): typed rows plus raw rejects;
//! 3. append the rows whose natural key bronze does not hold yet ([`Lake::append_new_rows`]) —
//!    for *versioned* sources (the masters) the key also includes the record's content hash, so a
//!    changed record is a new version (history for silver's SCD2) while an exact replay is a
//!    duplicate;
//! 4. send rejects to `quarantine/<source>` with rule id, reason and raw text.
//!
//! Conservation holds per source and is reported: read = written + quarantined + duplicates.

pub mod billing_monthly;
pub mod customers_orgs;
pub mod marketing_touches;
pub mod nps_surveys;
pub mod resources;
pub mod support_tickets;
pub mod usage_events;
pub mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::lake::{DedupSpec, Lake, Layer};
use crate::landing::{self, Column, IngestMeta, Landed, RECORD_HASH};
use crate::{Error, Result, quarantine};

/// Fractional digits of money columns (micro-units: "to the cent and below").
pub const MONEY_SCALE: i8 = 6;
/// Fractional digits of exchange rates.
pub const RATE_SCALE: i8 = 10;

/// The file format of a landing source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<landing>/<name>.csv`, plus any `<landing>/<name>/*.csv` that later deliveries add.
    Csv,
    /// `<landing>/usage_events_stream/*.jsonl`.
    Jsonl,
}

/// A landing source and its bronze table.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Source and bronze table name.
    pub name: &'static str,
    /// File format.
    pub format: Format,
    /// Declared columns, in bronze order.
    pub columns: &'static [Column],
    /// Natural key.
    pub key: &'static [&'static str],
    /// When true, bronze keeps every distinct version of a key (dedup on key + content hash).
    pub versioned: bool,
    /// `(timestamp column, date column)`: partition the table by the UTC date of a timestamp.
    pub date_partition: Option<(&'static str, &'static str)>,
}

/// Every source, masters first, events last.
pub const SOURCES: &[Source] = &[
    customers_orgs::SOURCE,
    users::SOURCE,
    resources::SOURCE,
    support_tickets::SOURCE,
    marketing_touches::SOURCE,
    nps_surveys::SOURCE,
    billing_monthly::SOURCE,
    usage_events::SOURCE,
];

/// Looks a source up by name.
pub fn source(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}

/// What bronze did for one source in one run.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct BronzeMetrics {
    /// Source name.
    pub source: String,
    /// Landing files read.
    pub files: usize,
    /// Records read (blank lines excluded).
    pub read: u64,
    /// New rows appended to bronze.
    pub written: u64,
    /// New rows appended to quarantine.
    pub quarantined: u64,
    /// Records already in bronze or quarantine, or repeated within the run.
    pub duplicates: u64,
    /// Values that did not cast and became null, per column.
    pub cast_failures: Vec<(String, u64)>,
    /// Micro-batches committed.
    pub batches: usize,
    /// Wall time, milliseconds.
    pub millis: u64,
}

impl BronzeMetrics {
    /// True when read = written + quarantined + duplicates.
    pub fn conserved(&self) -> bool {
        self.read == self.written + self.quarantined + self.duplicates
    }

    /// Adds another micro-batch's figures for the same source.
    pub fn absorb(&mut self, other: &BronzeMetrics) {
        self.files += other.files;
        self.read += other.read;
        self.written += other.written;
        self.quarantined += other.quarantined;
        self.duplicates += other.duplicates;
        landing::add_counts(&mut self.cast_failures, other.cast_failures.clone());
        self.batches += other.batches;
        self.millis += other.millis;
    }
}

/// Lists a source's landing files, sorted by name (relative names are used as lineage).
pub fn discover(landing: &Path, source: &Source) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    match source.format {
        Format::Csv => {
            let single = landing.join(format!("{}.csv", source.name));
            if single.is_file() {
                files.push(single);
            }
            files.extend(list_dir(&landing.join(source.name), &["csv"])?);
            if files.is_empty() {
                return Err(Error::LandingMissing {
                    path: landing.join(format!("{}.csv", source.name)),
                    source_name: source.name.to_string(),
                });
            }
        }
        Format::Jsonl => {
            let dir = landing.join(usage_events::LANDING_DIR);
            if !dir.is_dir() {
                return Err(Error::LandingMissing { path: dir, source_name: source.name.to_string() });
            }
            files.extend(list_dir(&dir, &["jsonl", "json"])?);
        }
    }
    Ok(files)
}

/// The event files of an event folder, sorted by name.
pub fn discover_events(dir: &Path) -> Result<Vec<PathBuf>> {
    list_dir(dir, &["jsonl", "json"])
}

/// Files of `dir` with one of `extensions`, sorted; hidden files (`.name`) are skipped.
fn list_dir(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if path.is_file() && !hidden && extensions.contains(&ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Lands the given files of one source into bronze (and quarantine), in micro-batches of at
/// most `batch_bytes` of input.
pub async fn ingest(
    ctx: &SessionContext,
    lake: &Lake,
    landing: &Path,
    source: &Source,
    files: &[PathBuf],
    meta: &IngestMeta,
    batch_bytes: u64,
) -> Result<BronzeMetrics> {
    let started = Instant::now();
    let mut metrics =
        BronzeMetrics { source: source.name.to_string(), files: files.len(), ..Default::default() };
    for chunk in micro_batches(files, batch_bytes)? {
        let landed = read_files(landing, source, chunk, meta)?;
        let read = landed.read;
        let rows: u64 = landed.batches.iter().map(|b| b.num_rows() as u64).sum();
        let rejects = landed.rejects.len() as u64;
        let written = write_rows(ctx, lake, source, landed.batches).await?;
        let quarantined = quarantine::write_rejects(ctx, lake, source.name, &landed.rejects, meta).await?;
        metrics.read += read;
        metrics.written += written;
        metrics.quarantined += quarantined;
        metrics.duplicates += (rows - written) + (rejects - quarantined);
        landing::add_counts(&mut metrics.cast_failures, landed.cast_failures);
        metrics.batches += 1;
    }
    if lake.open(Layer::Bronze, source.name).await?.is_none() {
        // Nothing readable arrived (yet): create the table empty, so silver and SQL find it.
        lake.overwrite(Layer::Bronze, source.name, vec![], bronze_schema(source), &partition_columns(source))
            .await?;
    }
    metrics.millis = started.elapsed().as_millis() as u64;
    tracing::info!(
        source = source.name,
        files = metrics.files,
        read = metrics.read,
        written = metrics.written,
        quarantined = metrics.quarantined,
        duplicates = metrics.duplicates,
        millis = metrics.millis,
        "Bronze ingested."
    );
    Ok(metrics)
}

/// Cuts files into consecutive groups of at most `max_bytes` (a file larger than that is a group
/// of its own).
fn micro_batches(files: &[PathBuf], max_bytes: u64) -> Result<Vec<&[PathBuf]>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, f) in files.iter().enumerate() {
        let len = std::fs::metadata(f).map_err(|e| Error::io(f, e))?.len();
        if i > start && bytes + len > max_bytes {
            out.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    Ok(out)
}

/// Reads files in parallel (one thread per core) and merges their yields in file order.
pub fn read_files(landing: &Path, source: &Source, files: &[PathBuf], meta: &IngestMeta) -> Result<Landed> {
    let parts = crate::parallel::map(files.iter().collect(), |path| read_file(landing, source, path, meta))?;
    let mut landed = Landed::default();
    for part in parts {
        landed.absorb(part);
    }
    Ok(landed)
}

fn read_file(landing: &Path, source: &Source, path: &Path, meta: &IngestMeta) -> Result<Landed> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let name = path.strip_prefix(landing).unwrap_or(path).to_string_lossy().replace('\\', "/");
    land_bytes(source, &bytes, &name, meta)
}

/// Reads one landing file's bytes (named `name` in lineage) into typed rows and rejects.
pub fn land_bytes(source: &Source, bytes: &[u8], name: &str, meta: &IngestMeta) -> Result<Landed> {
    let mut landed = match source.format {
        Format::Csv => landing::csv::read_csv(bytes, name, source.columns, source.key, meta)?,
        Format::Jsonl => landing::jsonl::read_jsonl(bytes, name, source.columns, source.key, meta)?,
    };
    if let Some((from, to)) = source.date_partition {
        landed.batches =
            landed.batches.into_iter().map(|b| with_date_column(b, from, to)).collect::<Result<_>>()?;
    }
    Ok(landed)
}

/// Appends `to` = UTC date of timestamp column `from`.
fn with_date_column(batch: RecordBatch, from: &str, to: &str) -> Result<RecordBatch> {
    let ts = batch
        .column_by_name(from)
        .ok_or_else(|| Error::Internal(format!("partition source column {from} is not declared")))?;
    let date = cast(ts, &DataType::Date32)?;
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(to, DataType::Date32, true));
    let mut columns = batch.columns().to_vec();
    columns.push(date);
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// The bronze table's schema: declared columns, lineage, and the date partition column.
pub fn bronze_schema(source: &Source) -> Arc<Schema> {
    let landed = landing::landed_schema(source.columns, source.format == Format::Jsonl);
    let mut fields: Vec<Field> = landed.fields().iter().map(|f| f.as_ref().clone()).collect();
    if let Some((_, to)) = source.date_partition {
        fields.push(Field::new(to, DataType::Date32, true));
    }
    Arc::new(Schema::new(fields))
}

/// The bronze table's partition columns.
pub fn partition_columns(source: &Source) -> Vec<&'static str> {
    source.date_partition.map(|(_, to)| to).into_iter().collect()
}

async fn write_rows(
    ctx: &SessionContext,
    lake: &Lake,
    source: &Source,
    batches: Vec<RecordBatch>,
) -> Result<u64> {
    let mut key: Vec<&str> = source.key.to_vec();
    if source.versioned {
        key.push(RECORD_HASH);
    }
    let partitions = partition_columns(source);
    let spec = DedupSpec { key: &key, partitions: &partitions };
    lake.append_new_rows(ctx, Layer::Bronze, source.name, batches, &spec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_declares_its_key_columns() {
        for s in SOURCES {
            for k in s.key {
                assert!(s.columns.iter().any(|c| c.name == *k), "{}: key {k} not declared", s.name);
            }
        }
        assert_eq!(SOURCES.len(), 8);
    }

    #[test]
    fn micro_batches_respect_the_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..5)
            .map(|i| {
                let p = dir.path().join(format!("{i}.jsonl"));
                std::fs::write(&p, vec![b'x'; 100]).unwrap();
                p
            })
            .collect();
        let sizes: Vec<usize> = micro_batches(&files, 250).unwrap().iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(micro_batches(&files, 10).unwrap().len(), 5);
        assert_eq!(micro_batches(&files, u64::MAX).unwrap().len(), 1);
    }
}
