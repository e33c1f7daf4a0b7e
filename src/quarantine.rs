//! Quarantine: records that were rejected, with why, where from and when (SPEC sections 3, 5).
//!
//! One table per source, `<lake>/quarantine/<source>`, shared by bronze (records that could not
//! be read) and silver (records that broke a `quarantine` rule). A row keeps the raw record,
//! the rule id, a human reason, the source file and line, the run id and the time. Rows are
//! keyed by `(rule_id, record_hash)`, so re-running over the same input, or a copied file,
//! quarantines nothing twice.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;

use crate::Result;
use crate::lake::{DedupSpec, Lake, Layer};
use crate::landing::{
    ColType, IngestMeta, RECORD_HASH, RUN_ID, Reject, SOURCE_FILE, SOURCE_LINE, record_hash,
};

/// Column: which layer rejected the record (`bronze` or `silver`).
pub const STAGE: &str = "stage";
/// Column: the rule id.
pub const RULE_ID: &str = "rule_id";
/// Column: the human reason.
pub const REASON: &str = "reason";
/// Column: the record, raw text (bronze) or JSON of the row (silver).
pub const RECORD: &str = "record";
/// Column: when it was quarantined.
pub const QUARANTINED_AT: &str = "quarantined_at";

/// The schema of every quarantine table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(STAGE, DataType::Utf8, false),
        Field::new(RULE_ID, DataType::Utf8, false),
        Field::new(REASON, DataType::Utf8, false),
        Field::new(RECORD, DataType::Utf8, false),
        Field::new(SOURCE_FILE, DataType::Utf8, true),
        Field::new(SOURCE_LINE, DataType::Int64, true),
        Field::new(RUN_ID, DataType::Utf8, false),
        Field::new(QUARANTINED_AT, ColType::Timestamp.data_type(), false),
        Field::new(RECORD_HASH, DataType::Int64, false),
    ]))
}

/// Builds quarantine rows for bronze rejects.
pub fn rejects_batch(rejects: &[Reject], meta: &IngestMeta) -> Result<RecordBatch> {
    let n = rejects.len();
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec!["bronze"; n])),
            Arc::new(StringArray::from_iter_values(rejects.iter().map(|r| r.rule))),
            Arc::new(StringArray::from_iter_values(rejects.iter().map(|r| r.reason.as_str()))),
            Arc::new(StringArray::from_iter_values(rejects.iter().map(|r| r.raw.as_str()))),
            Arc::new(StringArray::from_iter(rejects.iter().map(|r| Some(r.file.as_str())))),
            Arc::new(Int64Array::from_iter(rejects.iter().map(|r| Some(r.line as i64)))),
            Arc::new(StringArray::from(vec![meta.run_id.as_str(); n])),
            Arc::new(TimestampMicrosecondArray::from(vec![meta.ingest_ts_micros; n]).with_timezone("UTC")),
            Arc::new(Int64Array::from_iter_values(rejects.iter().map(|r| record_hash(r.raw.as_bytes())))),
        ],
    )?)
}

/// Appends bronze rejects of `source` to its quarantine table; returns the rows new to it.
pub async fn write_rejects(
    ctx: &SessionContext,
    lake: &Lake,
    source: &str,
    rejects: &[Reject],
    meta: &IngestMeta,
) -> Result<u64> {
    if rejects.is_empty() {
        return Ok(0);
    }
    write(ctx, lake, source, vec![rejects_batch(rejects, meta)?]).await
}

/// Appends quarantine rows (in [`schema`]) not already quarantined under the same rule.
pub async fn write(
    ctx: &SessionContext,
    lake: &Lake,
    source: &str,
    batches: Vec<RecordBatch>,
) -> Result<u64> {
    write_txn(ctx, lake, source, batches, None).await
}

/// [`write`], recording `txn` in the commit (a streaming micro-batch).
pub async fn write_txn(
    ctx: &SessionContext,
    lake: &Lake,
    source: &str,
    batches: Vec<RecordBatch>,
    txn: Option<&crate::lake::Txn>,
) -> Result<u64> {
    let spec = DedupSpec { key: &[RULE_ID, RECORD_HASH], partitions: &[] };
    lake.append_new_rows_txn(ctx, Layer::Quarantine, source, batches, &spec, txn).await
}
