//! Landing: reads immutable landing files into typed Arrow batches plus raw rejects.
//!
//! This layer knows file formats, not business rules. Each reader turns the records of one file
//! into rows of the source's declared columns ([`Column`]), casting with fallback
//! ([`cast`]) and adding lineage (`source_file`, `source_line`, `record_hash`) and ingest
//! metadata (`ingest_ts`, `run_id`). A record that cannot be read at all becomes a [`Reject`]
//! with its raw text, which bronze sends to quarantine.
//!
//! - [`csv`]: CSV masters and billing (BOM, CRLF, quoted commas, empty lines, wrong field counts);
//! - [`jsonl`]: usage events (malformed lines, unknown fields kept in `extra_json`, numbers as
//!   strings, epoch or text timestamps).

pub mod cast;
pub mod csv;
pub mod jsonl;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Builder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

pub use cast::{ColType, ColumnBuilder, Scalar};

use crate::Result;

/// Column name: when the record was ingested (one instant per run).
pub const INGEST_TS: &str = "ingest_ts";
/// Column name: the landing file the record came from, relative to the landing folder.
pub const SOURCE_FILE: &str = "source_file";
/// Column name: 1-based line of the record in its file.
pub const SOURCE_LINE: &str = "source_line";
/// Column name: the run that ingested the record.
pub const RUN_ID: &str = "run_id";
/// Column name: a stable 64-bit hash of the record's raw content.
pub const RECORD_HASH: &str = "record_hash";
/// Column name: unknown JSON fields of the record, as a JSON object (null when none).
pub const EXTRA_JSON: &str = "extra_json";

/// A declared landing column.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Name in the landing file and in bronze.
    pub name: &'static str,
    /// Declared type.
    pub ty: ColType,
}

/// Shorthand constructor for [`Column`] tables.
pub const fn col(name: &'static str, ty: ColType) -> Column {
    Column { name, ty }
}

/// Why a record could not be read, with everything needed to find and fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Rule id, e.g. `bronze.malformed_json`.
    pub rule: &'static str,
    /// A human sentence.
    pub reason: String,
    /// The raw record text (lossy UTF-8 when the bytes were not valid UTF-8).
    pub raw: String,
    /// File, relative to the landing folder.
    pub file: String,
    /// 1-based line where the record starts.
    pub line: u64,
}

/// Rule id: a JSON line that does not parse as an object.
pub const RULE_MALFORMED_JSON: &str = "bronze.malformed_json";
/// Rule id: a CSV row whose field count differs from the header's.
pub const RULE_FIELD_COUNT: &str = "bronze.field_count";
/// Rule id: a record whose natural key is absent or empty.
pub const RULE_MISSING_KEY: &str = "bronze.missing_key";
/// Rule id: bytes that are not UTF-8.
pub const RULE_INVALID_UTF8: &str = "bronze.invalid_utf8";

/// Per-run ingest metadata stamped on every row.
#[derive(Debug, Clone)]
pub struct IngestMeta {
    /// The run id.
    pub run_id: String,
    /// Ingest instant, microseconds since the epoch (UTC).
    pub ingest_ts_micros: i64,
}

/// What one or more landing files yielded.
#[derive(Debug, Default)]
pub struct Landed {
    /// Typed rows (possibly empty).
    pub batches: Vec<RecordBatch>,
    /// Records that could not be read.
    pub rejects: Vec<Reject>,
    /// Records seen (blank lines are not records).
    pub read: u64,
    /// Per column, values that did not cast and became null.
    pub cast_failures: Vec<(String, u64)>,
}

impl Landed {
    /// Merges another file's yield into this one (keeps file order).
    pub fn absorb(&mut self, other: Landed) {
        self.batches.extend(other.batches);
        self.rejects.extend(other.rejects);
        self.read += other.read;
        add_counts(&mut self.cast_failures, other.cast_failures);
    }

    /// Total values that did not cast.
    pub fn total_cast_failures(&self) -> u64 {
        self.cast_failures.iter().map(|(_, n)| n).sum()
    }
}

/// Adds per-column counts into `into`, keeping first-seen order.
pub fn add_counts(into: &mut Vec<(String, u64)>, from: Vec<(String, u64)>) {
    for (name, n) in from {
        match into.iter_mut().find(|(c, _)| *c == name) {
            Some((_, m)) => *m += n,
            None => into.push((name, n)),
        }
    }
}

/// The Arrow schema of landed rows: declared columns, then `extra_json` when asked, then lineage.
pub fn landed_schema(columns: &[Column], with_extra: bool) -> SchemaRef {
    let mut fields: Vec<Field> = columns.iter().map(|c| Field::new(c.name, c.ty.data_type(), true)).collect();
    if with_extra {
        fields.push(Field::new(EXTRA_JSON, DataType::Utf8, true));
    }
    fields.push(Field::new(INGEST_TS, ColType::Timestamp.data_type(), false));
    fields.push(Field::new(SOURCE_FILE, DataType::Utf8, false));
    fields.push(Field::new(SOURCE_LINE, DataType::Int64, false));
    fields.push(Field::new(RUN_ID, DataType::Utf8, false));
    fields.push(Field::new(RECORD_HASH, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The lines of `bytes`, split at each `\n` like `bytes.split(|b| *b == b'\n')` (the piece
/// after the last one included, empty or not), found with `memchr`'s vectorised search: the
/// byte-by-byte split took a third of the JSON Lines reader's own time.
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', bytes).map(Some).chain([None]).map(move |end| {
        let end = end.unwrap_or(bytes.len());
        let line = &bytes[start..end];
        start = end + 1;
        line
    })
}

/// Hashes raw record bytes into the `record_hash` column value (stable across runs and machines).
pub fn record_hash(bytes: &[u8]) -> i64 {
    xxhash_rust::xxh3::xxh3_64(bytes) as i64
}

/// Accumulates the rows of one file.
pub(crate) struct RowsBuilder<'a> {
    columns: &'a [Column],
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    extra: Option<StringBuilder>,
    lines: Int64Builder,
    hashes: Int64Builder,
    failures: Vec<u64>,
    rows: usize,
}

impl<'a> RowsBuilder<'a> {
    pub(crate) fn new(columns: &'a [Column], with_extra: bool, capacity: usize) -> Self {
        RowsBuilder {
            columns,
            schema: landed_schema(columns, with_extra),
            builders: columns.iter().map(|c| ColumnBuilder::new(c.ty, capacity)).collect(),
            extra: with_extra.then(|| StringBuilder::with_capacity(capacity, 0)),
            lines: Int64Builder::with_capacity(capacity),
            hashes: Int64Builder::with_capacity(capacity),
            failures: vec![0; columns.len()],
            rows: 0,
        }
    }

    /// The builder of declared column `i`; the caller pushes exactly one value per column per row
    /// and then calls [`RowsBuilder::end_row`].
    pub(crate) fn push_text(&mut self, i: usize, s: &str) {
        if !self.builders[i].push_text(s) {
            self.failures[i] += 1;
        }
    }

    pub(crate) fn push_scalar(&mut self, i: usize, v: &Scalar<'_>) {
        if !self.builders[i].push_scalar(v) {
            self.failures[i] += 1;
        }
    }

    pub(crate) fn push_extra(&mut self, json: Option<&str>) {
        if let Some(b) = self.extra.as_mut() {
            b.append_option(json);
        }
    }

    pub(crate) fn end_row(&mut self, line: u64, hash: i64) {
        self.lines.append_value(line as i64);
        self.hashes.append_value(hash);
        self.rows += 1;
    }

    /// Finishes into a [`Landed`] (the caller adds rejects and the read count).
    pub(crate) fn finish(mut self, file: &str, meta: &IngestMeta) -> Result<Landed> {
        let n = self.rows;
        let mut arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        if let Some(b) = self.extra.as_mut() {
            arrays.push(Arc::new(b.finish()));
        }
        arrays.push(Arc::new(
            datafusion::arrow::array::TimestampMicrosecondArray::from(vec![meta.ingest_ts_micros; n])
                .with_timezone("UTC"),
        ));
        arrays.push(Arc::new(datafusion::arrow::array::StringArray::from(vec![file; n])));
        arrays.push(Arc::new(self.lines.finish()));
        arrays.push(Arc::new(datafusion::arrow::array::StringArray::from(vec![meta.run_id.as_str(); n])));
        arrays.push(Arc::new(self.hashes.finish()));
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        let cast_failures = self
            .columns
            .iter()
            .zip(&self.failures)
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (c.name.to_string(), *n))
            .collect();
        Ok(Landed {
            batches: if n > 0 { vec![batch] } else { vec![] },
            rejects: vec![],
            read: 0,
            cast_failures,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_split_like_the_slice_split_at_newlines() {
        for text in ["", "\n", "a", "a\n", "a\nb", "\n\na\r\n\nbc\n", "x\n\n"] {
            let ours: Vec<&[u8]> = super::lines(text.as_bytes()).collect();
            let std: Vec<&[u8]> = text.as_bytes().split(|b| *b == b'\n').collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }
}
