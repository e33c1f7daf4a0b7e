//! The lake's upsert ([`super::Lake::merge_txn`]) for unpartitioned tables: a copy-on-write of
//! only the files that hold a key of the incoming rows, streamed, so memory follows the incoming
//! rows and one file being written, never the table.
//!
//! 1. The incoming keys go into a hash set (Arrow's row format of the key columns: two NULLs are
//!    the same key, as `IS NOT DISTINCT FROM` says).
//! 2. The table's key columns are scanned with the file each row comes from; a file holding an
//!    incoming key is *touched*. A key column of dates gets a range filter first, so files whose
//!    statistics lie outside the incoming dates are skipped unread.
//! 3. The touched files are read whole, their rows whose key is incoming are dropped, and the
//!    rest, then the incoming rows, are written to new files of bounded size.
//! 4. One commit removes the touched files and adds the new ones, recording the stream's
//!    transaction when given.
//!
//! delta-rs' MERGE does the same work in one pass, but its barrier holds every row of a file
//! until it learns whether the file changed: on the stream's daily table, where late events
//! touch most files, that held most of the table (peaks of several GB at 5 M rows).

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::StreamExt;

use super::{Txn, unique_text, writer_properties};
use crate::{Error, Result};

/// The scan column naming the file a row was read from.
const FILE_COLUMN: &str = "__cloudlake_file";

/// Files an upsert writes are closed at about this size, so a later upsert rewrites only the
/// files holding its keys, and the writer's buffer stays small.
pub const TARGET_FILE_BYTES: u64 = 32 << 20;

/// What an upsert did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// Rows of the table replaced by an incoming row of the same key.
    pub updated: u64,
    /// Incoming rows whose key the table did not hold.
    pub inserted: u64,
    /// Files rewritten (removed, their other rows written again).
    pub files_rewritten: u64,
    /// Rows of rewritten files written again unchanged.
    pub rows_copied: u64,
}

/// Upserts `incoming` (rows unique on `keys`) into `table` (unpartitioned) as described in the
/// module; `name` names the table in errors.
pub async fn upsert(
    table: &DeltaTable,
    name: &str,
    incoming: Vec<RecordBatch>,
    keys: &[&str],
    txn: Option<&Txn>,
) -> Result<Upserted> {
    let err = |e| Error::delta(name.to_string(), e);
    let writer = RecordBatchWriter::for_table(table).map_err(err)?;
    let schema = writer.arrow_schema();
    let incoming = incoming.iter().map(|b| conform(b, &schema, name)).collect::<Result<Vec<_>>>()?;
    let incoming_rows: u64 = incoming.iter().map(|b| b.num_rows() as u64).sum();
    if incoming_rows == 0 {
        return Ok(Upserted::default());
    }
    let key_index = keys
        .iter()
        .map(|k| {
            schema.index_of(k).map_err(|_| Error::Internal(format!("upsert into {name}: no key column {k}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let converter = RowConverter::new(
        key_index.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect(),
    )?;
    let incoming_keys: Vec<Rows> = incoming
        .iter()
        .map(|b| {
            converter.convert_columns(&key_index.iter().map(|i| b.column(*i).clone()).collect::<Vec<_>>())
        })
        .collect::<std::result::Result<_, _>>()?;
    let key_set: foldhash::HashSet<&[u8]> =
        incoming_keys.iter().flat_map(|r| r.iter().map(|r| r.data())).collect();
    let is_incoming = |batch: &RecordBatch| -> Result<BooleanArray> {
        let columns = key_index
            .iter()
            .map(|i| {
                let c = batch.column_by_name(schema.field(*i).name()).ok_or_else(|| {
                    Error::Internal(format!("upsert into {name}: the scan lacks {}", schema.field(*i).name()))
                })?;
                Ok(cast(c, schema.field(*i).data_type())?)
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = converter.convert_columns(&columns)?;
        Ok(rows.iter().map(|r| Some(key_set.contains(r.data()))).collect())
    };

    // 2. The touched files, and how many of their rows the incoming ones replace.
    let ctx = super::session();
    table.update_datafusion_session(&ctx.state()).map_err(err)?;
    let provider = table.table_provider().with_file_column(FILE_COLUMN).await?;
    let mut scan = ctx.read_table(provider)?;
    let mut projection: Vec<&str> = keys.to_vec();
    projection.push(FILE_COLUMN);
    scan = scan.select_columns(&projection)?;
    for i in &key_index {
        if let Some((low, high)) = date_range(&incoming, *i)? {
            let k = col(schema.field(*i).name());
            scan = scan.filter(k.clone().gt_eq(lit(low)).and(k.lt_eq(lit(high))))?;
        }
    }
    let mut root = table.table_url().to_string();
    if !root.ends_with('/') {
        root.push('/');
    }
    let mut replaced: HashMap<String, u64> = HashMap::new();
    let mut stream = scan.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let hit = is_incoming(&batch)?;
        if hit.true_count() == 0 {
            continue;
        }
        let files = batch
            .column_by_name(FILE_COLUMN)
            .ok_or_else(|| Error::Internal(format!("upsert into {name}: the scan lacks the file column")))?;
        let files = cast(files, &DataType::Utf8)?;
        let files = files.as_string::<i32>();
        for row in hit.iter().enumerate().filter_map(|(i, h)| h.unwrap_or(false).then_some(i)) {
            // The scan names a file by its URL, the log by its path under the table's root.
            let file = files.value(row);
            let file = file.strip_prefix(root.as_str()).unwrap_or(file);
            *replaced.entry(file.to_string()).or_default() += 1;
        }
    }
    drop(stream);

    // 3. The touched files' other rows, then the incoming rows, into new files.
    let unique = incoming.first().map(unique_text).unwrap_or_default();
    let mut writer = writer
        .with_writer_properties(writer_properties(&schema, &unique))
        .with_target_file_size(TARGET_FILE_BYTES);
    let mut out = Upserted::default();
    let mut removes = Vec::new();
    if !replaced.is_empty() {
        let snapshot = table.snapshot().map_err(err)?;
        for file in snapshot.log_data().iter() {
            if replaced.contains_key(file.path().as_ref()) {
                removes.push(Action::Remove(file.remove_action(true)));
            }
        }
        if removes.len() != replaced.len() {
            return Err(Error::Internal(format!(
                "upsert into {name}: {} touched files, {} of them found in the table's log",
                replaced.len(),
                removes.len()
            )));
        }
        let paths: Vec<String> = removes
            .iter()
            .filter_map(|a| if let Action::Remove(r) = a { Some(r.path.clone()) } else { None })
            .collect();
        let provider = table.table_provider().with_file_paths(paths).await?;
        let mut stream = ctx.read_table(provider)?.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let hit = is_incoming(&batch)?;
            let keep = datafusion::arrow::compute::not(&hit)?;
            let kept = filter_record_batch(&batch, &keep)?;
            if kept.num_rows() > 0 {
                out.rows_copied += kept.num_rows() as u64;
                writer.write(conform(&kept, &schema, name)?).await.map_err(err)?;
            }
        }
    }
    for batch in incoming {
        writer.write(batch).await.map_err(err)?;
    }
    let adds = writer.flush().await.map_err(err)?;

    // 4. One commit.
    out.updated = replaced.values().sum();
    out.inserted = incoming_rows.saturating_sub(out.updated);
    out.files_rewritten = removes.len() as u64;
    let mut actions = removes;
    actions.extend(adds.into_iter().map(Action::Add));
    let metrics = serde_json::json!({
        "num_target_rows_updated": out.updated,
        "num_target_rows_inserted": out.inserted,
        "num_target_rows_copied": out.rows_copied,
        "num_target_files_removed": out.files_rewritten,
    });
    let mut metadata = txn.map(|t| t.metadata.clone()).unwrap_or_default();
    metadata.push(("operationMetrics".to_string(), metrics));
    let properties = txn.map(Txn::commit_properties).unwrap_or_default().with_metadata(metadata);
    let on: Vec<String> = keys.iter().map(|k| format!("target.{k} <=> source.{k}")).collect();
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(on.join(" AND ")),
        matched_predicates: vec![MergePredicate { action_type: "update".into(), predicate: None }],
        not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: None }],
        not_matched_by_source_predicates: vec![],
    };
    let snapshot = table.snapshot().map_err(err)?;
    CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(err)?;
    Ok(out)
}

/// `batch` with the columns of `schema`, by name, cast to its types.
fn conform(batch: &RecordBatch, schema: &SchemaRef, name: &str) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch
                .column_by_name(f.name())
                .ok_or_else(|| Error::Internal(format!("upsert into {name}: no column {}", f.name())))?;
            Ok(cast(c, f.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The lowest and highest date of column `index` in `batches`, when it is a date column
/// without NULLs (a NULL key matches only NULL, which a range would exclude).
fn date_range(batches: &[RecordBatch], index: usize) -> Result<Option<(ScalarValue, ScalarValue)>> {
    use datafusion::arrow::datatypes::Date32Type;
    let mut range: Option<(i32, i32)> = None;
    for batch in batches {
        let column = batch.column(index);
        if column.data_type() != &DataType::Date32 || column.null_count() > 0 {
            return Ok(None);
        }
        let dates = column.as_primitive::<Date32Type>();
        let (Some(low), Some(high)) =
            (datafusion::arrow::compute::min(dates), datafusion::arrow::compute::max(dates))
        else {
            continue;
        };
        range = Some(range.map_or((low, high), |(l, h)| (l.min(low), h.max(high))));
    }
    Ok(range.map(|(l, h)| (ScalarValue::Date32(Some(l)), ScalarValue::Date32(Some(h)))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lake::{Lake, Layer};
    use datafusion::arrow::array::{Date32Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    type Row = (Option<&'static str>, i32, i64);

    fn batch(rows: &[Row]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("org_id", DataType::Utf8, true),
            Field::new("usage_date", DataType::Date32, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    async fn rows(lake: &Lake) -> Vec<(Option<String>, i32, i64)> {
        let ctx = crate::lake::session();
        lake.register(&ctx, Layer::Silver, "t").await.unwrap();
        let out = ctx
            .sql("SELECT * FROM silver_t ORDER BY usage_date, org_id")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut all = Vec::new();
        for b in out {
            let b = conform(&b, &batch(&[]).schema(), "t").unwrap();
            let (o, d, n) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<datafusion::arrow::datatypes::Date32Type>(),
                b.column(2).as_primitive::<datafusion::arrow::datatypes::Int64Type>(),
            );
            for i in 0..b.num_rows() {
                all.push((o.is_valid(i).then(|| o.value(i).to_string()), d.value(i), n.value(i)));
            }
        }
        all
    }

    fn files(lake: &Lake) -> Vec<String> {
        let dir = std::path::Path::new(&lake.location()).join("silver/t");
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.ends_with(".parquet"))
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_upsert_rewrites_only_the_files_holding_its_keys_and_matches_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let ctx = crate::lake::session();
        // Three files: days 1–2, day 10 (with a NULL org), day 20.
        let first = batch(&[(Some("a"), 1, 1), (Some("b"), 1, 2), (Some("a"), 2, 3)]);
        lake.overwrite(Layer::Silver, "t", vec![first.clone()], first.schema(), &[]).await.unwrap();
        lake.append(Layer::Silver, "t", vec![batch(&[(Some("a"), 10, 4), (None, 10, 5)])], &[])
            .await
            .unwrap();
        lake.append(Layer::Silver, "t", vec![batch(&[(Some("c"), 20, 6)])], &[]).await.unwrap();
        let before = files(&lake);
        assert_eq!(before.len(), 3);

        // Updates b/1 and NULL/10, inserts a/11; the file of day 20 is outside the dates,
        // the file of days 1–2 is read but keeps its rows apart from b/1.
        let incoming = batch(&[(Some("b"), 1, 20), (None, 10, 50), (Some("a"), 11, 7)]);
        let txn = Txn::batch("s", 3);
        let counts = lake
            .merge_txn(&ctx, Layer::Silver, "t", vec![incoming], &["org_id", "usage_date"], Some(&txn))
            .await
            .unwrap();
        assert_eq!(counts, (2, 1));
        assert_eq!(
            rows(&lake).await,
            vec![
                (Some("a".into()), 1, 1),
                (Some("b".into()), 1, 20),
                (Some("a".into()), 2, 3),
                (Some("a".into()), 10, 4),
                (None, 10, 50),
                (Some("a".into()), 11, 7),
                (Some("c".into()), 20, 6),
            ]
        );
        assert_eq!(lake.txn_version(Layer::Silver, "t", "s").await.unwrap(), Some(3));
        // The untouched file of day 20 is still in the table; the other two were replaced.
        let table = lake.open(Layer::Silver, "t").await.unwrap().unwrap();
        let live: Vec<String> = table.get_file_uris().unwrap().collect();
        assert_eq!(live.len(), 2, "{live:?}");
        let kept: Vec<&String> =
            before.iter().filter(|f| live.iter().any(|l| l.ends_with(f.as_str()))).collect();
        assert_eq!(kept.len(), 1, "{kept:?}");

        // Upserting the same rows again changes nothing but the files holding them.
        let again = batch(&[(Some("b"), 1, 20), (None, 10, 50), (Some("a"), 11, 7)]);
        let counts =
            lake.merge(&ctx, Layer::Silver, "t", vec![again], &["org_id", "usage_date"]).await.unwrap();
        assert_eq!(counts, (3, 0));
        assert_eq!(rows(&lake).await.len(), 7);
    }
}
