//! The lake's upsert ([`super::Lake::merge_txn`]) for unpartitioned tables: a copy-on-write of
//! only the files that hold a key of the incoming rows, streamed, so memory follows the incoming
//! rows and one file being written, never the table.
//!
//! 1. The incoming keys go into a hash set (Arrow's row format of the key columns: two NULLs are
//!    the same key, as `IS NOT DISTINCT FROM` says).
//! 2. The table's key columns are scanned with the file each row comes from; a file holding an
//!    incoming key is *touched*. A key column of dates gets a range filter first, so files whose
//!    statistics lie outside the incoming dates are skipped unread. When the incoming rows are a
//!    quarter of the table's or more, every file is taken as touched without this scan: such an
//!    upsert (a stream's gold step after a catch-up, whose late events fall on every date)
//!    touches nearly every file anyway.
//! 3. The touched files are read whole, their rows whose key is incoming are dropped, and the
//!    rest, then the incoming rows, are written to new files of bounded size, by two writers on
//!    tasks of their own when there are many rows (Parquet encoding is most of the work).
//! 4. One commit removes the touched files and adds the new ones, recording the stream's
//!    transaction when given.
//!
//! delta-rs' MERGE does the same work in one pass, but its barrier holds every row of a file
//! until it learns whether the file changed: on the stream's daily table, where late events
//! touch most files, that held most of the table (peaks of several GB at 5 M rows).

use std::collections::HashSet;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add};
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

/// Rows an upsert writes (the touched files' and the incoming) from which two writers share
/// the encoding; below, one writer keeps a small table in fewer files.
const TWO_WRITERS_FROM: u64 = 500_000;

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
    /// Milliseconds finding the touched files (step 2), rewriting them with the incoming rows
    /// (step 3) and committing (step 4).
    pub millis: [u64; 3],
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
    let started = std::time::Instant::now();
    let schema = RecordBatchWriter::for_table(table).map_err(err)?.arrow_schema();
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

    // 2. The touched files. When the incoming rows are a quarter of the table's or more (a gold
    //    step after a stream's catch-up, whose late events fall on every date), nearly every file
    //    holds one of their keys: every file is taken as touched, without scanning the keys first.
    let ctx = super::session();
    table.update_datafusion_session(&ctx.state()).map_err(err)?;
    let snapshot = table.snapshot().map_err(err)?;
    let table_rows: Option<u64> = snapshot.log_data().iter().map(|f| f.num_records().map(|n| n as u64)).sum();
    let every_file = table_rows.is_some_and(|n| incoming_rows.saturating_mul(4) >= n);
    // The files the key scan found, or None when every file is taken.
    let touched = if every_file {
        None
    } else {
        Some(touched_files(table, name, &ctx, (&schema, keys, &key_index), &incoming, &is_incoming).await?)
    };
    let scanned = started.elapsed();

    // 3. The touched files' other rows, then the incoming rows, into new files.
    let mut out = Upserted::default();
    let mut removes = Vec::new();
    let mut rows_out = incoming_rows;
    for file in snapshot.log_data().iter() {
        if touched.as_ref().is_none_or(|t| t.contains(file.path().as_ref())) {
            removes.push(file.remove_action(true));
            rows_out += file.num_records().unwrap_or(0) as u64;
        }
    }
    let unique = incoming.first().map(|b| unique_text(b, rows_out as usize)).unwrap_or_default();
    let properties = writer_properties(&schema, &unique);
    if let Some(t) = &touched
        && t.len() != removes.len()
    {
        return Err(Error::Internal(format!(
            "upsert into {name}: {} touched files, {} of them found in the table's log",
            t.len(),
            removes.len()
        )));
    }
    let mut writer = Writers::new(table, name, properties, if rows_out >= TWO_WRITERS_FROM { 2 } else { 1 })?;
    if !removes.is_empty() {
        let paths: Vec<String> = removes.iter().map(|r| r.path.clone()).collect();
        let provider = table.table_provider().with_file_paths(paths).await?;
        let mut stream = ctx.read_table(provider)?.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let hit = is_incoming(&batch)?;
            out.updated += hit.true_count() as u64;
            let keep = datafusion::arrow::compute::not(&hit)?;
            let kept = filter_record_batch(&batch, &keep)?;
            if kept.num_rows() > 0 {
                out.rows_copied += kept.num_rows() as u64;
                writer.write(conform(&kept, &schema, name)?).await?;
            }
        }
    }
    for batch in incoming {
        writer.write(batch).await?;
    }
    let adds = writer.finish().await?;
    let rewritten = started.elapsed();

    // 4. One commit.
    out.inserted = incoming_rows.saturating_sub(out.updated);
    out.files_rewritten = removes.len() as u64;
    let mut actions: Vec<Action> = removes.into_iter().map(Action::Remove).collect();
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
    out.millis = [
        scanned.as_millis() as u64,
        (rewritten - scanned).as_millis() as u64,
        (started.elapsed() - rewritten).as_millis() as u64,
    ];
    Ok(out)
}

/// Step 2 of [`upsert`]: the files of `table` (`name` in errors) holding a key of `incoming`, by
/// `is_incoming`. `key` gives the schema, the key columns and their indexes; a key column of
/// dates without NULLs bounds the scan by the incoming dates.
async fn touched_files(
    table: &DeltaTable,
    name: &str,
    ctx: &datafusion::prelude::SessionContext,
    key: (&SchemaRef, &[&str], &[usize]),
    incoming: &[RecordBatch],
    is_incoming: &(dyn Fn(&RecordBatch) -> Result<BooleanArray> + Sync),
) -> Result<HashSet<String>> {
    let (schema, keys, key_index) = key;
    let provider = table.table_provider().with_file_column(FILE_COLUMN).await?;
    let mut scan = ctx.read_table(provider)?;
    let mut projection: Vec<&str> = keys.to_vec();
    projection.push(FILE_COLUMN);
    scan = scan.select_columns(&projection)?;
    for i in key_index {
        if let Some((low, high)) = date_range(incoming, *i)? {
            let k = col(schema.field(*i).name());
            scan = scan.filter(k.clone().gt_eq(lit(low)).and(k.lt_eq(lit(high))))?;
        }
    }
    let mut root = table.table_url().to_string();
    if !root.ends_with('/') {
        root.push('/');
    }
    let mut stream = scan.execute_stream().await?;
    let mut replaced = HashSet::new();
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
            if !replaced.contains(file) {
                replaced.insert(file.to_string());
            }
        }
    }
    Ok(replaced)
}

/// Writers encoding Parquet on tasks of their own, fed batches in turn. Encoding is most of an
/// upsert's CPU: on the task reading the table, one writer kept 1.25–1.4 of the 2 cores busy.
struct Writers {
    feeds: Vec<tokio::sync::mpsc::Sender<RecordBatch>>,
    tasks: Vec<Option<tokio::task::JoinHandle<Result<Vec<Add>>>>>,
    next: usize,
}

impl Writers {
    fn new(table: &DeltaTable, name: &str, properties: WriterProperties, count: usize) -> Result<Self> {
        use tracing::Instrument;
        let mut writers = Writers { feeds: Vec::new(), tasks: Vec::new(), next: 0 };
        for _ in 0..count.max(1) {
            let err = |e| Error::delta(name.to_string(), e);
            let mut writer = RecordBatchWriter::for_table(table)
                .map_err(err)?
                .with_writer_properties(properties.clone())
                .with_target_file_size(TARGET_FILE_BYTES);
            let (feed, mut batches) = tokio::sync::mpsc::channel::<RecordBatch>(2);
            let name = name.to_string();
            let task = async move {
                let err = |e| Error::delta(name.clone(), e);
                while let Some(batch) = batches.recv().await {
                    writer.write(batch).await.map_err(err)?;
                }
                writer.flush().await.map_err(err)
            };
            writers.feeds.push(feed);
            writers.tasks.push(Some(tokio::spawn(task.instrument(tracing::Span::current()))));
        }
        Ok(writers)
    }

    /// Hands `batch` to the next writer; a writer that stopped on an error returns it here.
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let i = self.next % self.feeds.len();
        self.next += 1;
        if self.feeds[i].send(batch).await.is_ok() {
            return Ok(());
        }
        if let Some(task) = self.tasks[i].take() {
            task.await.map_err(|e| Error::task("a Parquet writer", e))??;
        }
        Err(Error::Internal("a Parquet writer stopped before its input ended".into()))
    }

    /// Closes every writer and returns the files they wrote, or the first writer's error once
    /// all have stopped.
    async fn finish(mut self) -> Result<Vec<Add>> {
        self.feeds.clear();
        let mut adds = Vec::new();
        let mut failed = None;
        for task in std::mem::take(&mut self.tasks).into_iter().flatten() {
            match task.await.map_err(|e| Error::task("a Parquet writer", e)) {
                Ok(Ok(written)) => adds.extend(written),
                Ok(Err(e)) | Err(e) => failed = failed.or(Some(e)),
            }
        }
        failed.map_or(Ok(adds), Err)
    }
}

impl Drop for Writers {
    /// An upsert that failed before [`Writers::finish`] stops its writers: closing their input
    /// would make them write files no commit names.
    fn drop(&mut self) {
        for task in self.tasks.iter().flatten() {
            task.abort();
        }
    }
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

    /// Three files: days 1–2, day 10 (with a NULL org), day 20.
    async fn three_files(lake: &Lake) {
        let first = batch(&[(Some("a"), 1, 1), (Some("b"), 1, 2), (Some("a"), 2, 3)]);
        lake.overwrite(Layer::Silver, "t", vec![first.clone()], first.schema(), &[]).await.unwrap();
        lake.append(Layer::Silver, "t", vec![batch(&[(Some("a"), 10, 4), (None, 10, 5)])], &[])
            .await
            .unwrap();
        lake.append(Layer::Silver, "t", vec![batch(&[(Some("c"), 20, 6)])], &[]).await.unwrap();
    }

    /// The rows of [`three_files`] once NULL/10 became 50, a/11 was added and b/1 is `b1`.
    fn upserted(b1: i64) -> Vec<(Option<String>, i32, i64)> {
        vec![
            (Some("a".into()), 1, 1),
            (Some("b".into()), 1, b1),
            (Some("a".into()), 2, 3),
            (Some("a".into()), 10, 4),
            (None, 10, 50),
            (Some("a".into()), 11, 7),
            (Some("c".into()), 20, 6),
        ]
    }

    #[tokio::test]
    async fn an_upsert_rewrites_only_the_files_holding_its_keys_and_matches_nulls() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let ctx = crate::lake::session();
        // Four files: the three of `three_files`, and days 30–41, twelve rows so that the
        // incoming rows are under a quarter of the table (above, no key is scanned).
        three_files(&lake).await;
        let later: Vec<Row> = (30..42).map(|day| (Some("z"), day, 0)).collect();
        lake.append(Layer::Silver, "t", vec![batch(&later)], &[]).await.unwrap();
        let before = files(&lake);
        assert_eq!(before.len(), 4);

        // Updates b/1 and NULL/10, inserts a/11; the file of day 20 is outside the dates,
        // the file of days 1–2 is read but keeps its rows apart from b/1.
        let incoming = batch(&[(Some("b"), 1, 20), (None, 10, 50), (Some("a"), 11, 7)]);
        let txn = Txn::batch("s", 3);
        let counts = lake
            .merge_txn(&ctx, Layer::Silver, "t", vec![incoming], &["org_id", "usage_date"], Some(&txn))
            .await
            .unwrap();
        assert_eq!(counts, (2, 1));
        let all = rows(&lake).await;
        assert_eq!(all.len(), 19);
        assert_eq!(all[..7], upserted(20));
        assert_eq!(lake.txn_version(Layer::Silver, "t", "s").await.unwrap(), Some(3));
        // The untouched files of days 20 and 30–41 are still in the table; the other two were replaced.
        let table = lake.open(Layer::Silver, "t").await.unwrap().unwrap();
        let live: Vec<String> = table.get_file_uris().unwrap().collect();
        assert_eq!(live.len(), 3, "{live:?}");
        let kept: Vec<&String> =
            before.iter().filter(|f| live.iter().any(|l| l.ends_with(f.as_str()))).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");

        // Upserting the same rows again changes nothing but the files holding them.
        let again = batch(&[(Some("b"), 1, 20), (None, 10, 50), (Some("a"), 11, 7)]);
        let counts =
            lake.merge(&ctx, Layer::Silver, "t", vec![again], &["org_id", "usage_date"]).await.unwrap();
        assert_eq!(counts, (3, 0));
        assert_eq!(rows(&lake).await.len(), 19);
    }

    #[tokio::test]
    async fn two_writers_share_the_batches_and_return_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let first = batch(&[(Some("a"), 1, 1)]);
        lake.overwrite(Layer::Silver, "t", vec![first.clone()], first.schema(), &[]).await.unwrap();
        let table = lake.open(Layer::Silver, "t").await.unwrap().unwrap();
        let properties = writer_properties(&first.schema(), &[]);
        let mut writers = Writers::new(&table, "silver/t", properties, 2).unwrap();
        for day in 0..5 {
            writers.write(batch(&[(Some("b"), day, 1), (Some("c"), day, 2)])).await.unwrap();
        }
        let adds = writers.finish().await.unwrap();
        assert_eq!(adds.len(), 2, "{adds:?}");
        assert_ne!(adds[0].path, adds[1].path);
        let rows: i64 = adds
            .iter()
            .map(|a| {
                serde_json::from_str::<serde_json::Value>(a.stats.as_deref().unwrap()).unwrap()["numRecords"]
                    .as_i64()
                    .unwrap()
            })
            .sum();
        assert_eq!(rows, 10);
    }

    #[tokio::test]
    async fn incoming_rows_a_quarter_of_the_table_rewrite_every_file_without_a_key_scan() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        three_files(&lake).await;

        // Two incoming rows against six: every file is rewritten, the one of day 20 too, though
        // it holds no incoming key; the rows are those a key scan would have given.
        let table = lake.open(Layer::Silver, "t").await.unwrap().unwrap();
        let incoming = batch(&[(None, 10, 50), (Some("a"), 11, 7)]);
        let done = upsert(&table, "silver/t", vec![incoming], &["org_id", "usage_date"], None).await.unwrap();
        assert_eq!((done.updated, done.inserted, done.files_rewritten, done.rows_copied), (1, 1, 3, 5));
        assert_eq!(rows(&lake).await, upserted(2));
        assert_eq!(lake.open(Layer::Silver, "t").await.unwrap().unwrap().get_file_uris().unwrap().count(), 1);
    }
}
