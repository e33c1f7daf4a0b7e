//! Appends to a partitioned table, one file per partition value, on every core.
//!
//! delta-rs's `write` runs its input through DataFusion: it hash-repartitions the rows by their
//! partition columns (a copy of every row), then each writer sorts every batch it gets by
//! partition value and copies it again, a few rows per partition at a time. A micro-batch of
//! events holds every date of the feed, so it paid both copies and thousands of small writes.
//! Here the rows are grouped by partition value once, and the partitions are dealt, by rows, to
//! as many delta-rs `DeltaWriter`s as there are cores, each on a task of its own. A writer
//! copies its partitions' rows of a batch (one `take`, none when they sit side by side, as a
//! silver chunk's do) just before it writes them: no second copy of the whole input is held.
//! The files, their statistics and the commit (with its application transactions and metrics)
//! are the ones delta-rs's own write makes; anything this path does not handle (a new table, an
//! overwrite, other column types) goes through delta-rs's write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, PROTOCOL};
use deltalake::operations::write::configs::WriterStatsConfig;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use indexmap::IndexMap;

use crate::{Error, Result};

/// The table's own Arrow schema when `schema`'s batches can be appended to it here: the table
/// is partitioned by exactly `partitions`, holds the same columns with the same types, and
/// uses no feature this path does not write (column mapping, constraints, generated columns,
/// or anything the protocol would refuse). `None`: let delta-rs's write do it.
pub(super) fn eligible(table: &DeltaTable, schema: &SchemaRef, partitions: &[&str]) -> Option<SchemaRef> {
    let state = table.snapshot().ok()?;
    let metadata = state.metadata();
    if partitions.is_empty()
        || metadata.partition_columns().iter().map(String::as_str).ne(partitions.iter().copied())
    {
        return None;
    }
    let config = metadata.configuration();
    if config.keys().any(|k| k.starts_with("delta.constraints.") || k == "delta.columnMapping.mode") {
        return None;
    }
    PROTOCOL.can_write_to(state).ok()?;
    let table_schema = state.snapshot().arrow_schema();
    let same = table_schema.fields().len() == schema.fields().len()
        && table_schema.fields().iter().zip(schema.fields()).all(|(t, s)| {
            t.name() == s.name()
                && same_type(t.data_type(), s.data_type())
                && !t.metadata().contains_key("delta.generationExpression")
        });
    same.then_some(table_schema)
}

/// Whether a column of type `ours` goes into a table column of type `table`: the same type, or
/// text in another layout (a query reading Parquet gives `Utf8View` where tables hold `Utf8`).
fn same_type(table: &DataType, ours: &DataType) -> bool {
    table == ours || (table.is_string() && ours.is_string())
}

/// The schema the files are written in: the table's (names, nullability, metadata), with text in
/// the layout `incoming` holds it in. A query reading Parquet gives `Utf8View`; Parquet stores
/// both layouts alike (`BYTE_ARRAY`, UTF-8), and casting to the table's `Utf8` copied every
/// string of a silver chunk once more (2.7 % of a scale-100 run's CPU).
fn file_schema(table_schema: &SchemaRef, incoming: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = table_schema
        .fields()
        .iter()
        .zip(incoming.fields())
        .map(|(t, i)| match t.data_type() != i.data_type() && same_type(t.data_type(), i.data_type()) {
            true => Arc::new(t.as_ref().clone().with_data_type(i.data_type().clone())),
            false => t.clone(),
        })
        .collect();
    Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(fields, table_schema.metadata().clone()))
}

/// `batch` with the files' schema (see [`file_schema`]), cast where a column's type differs.
fn in_file_schema(batch: RecordBatch, files: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(files.fields())
        .map(|(column, field)| match column.data_type() == field.data_type() {
            true => Ok(column.clone()),
            false => cast(column, field.data_type()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(files.clone(), columns)?)
}

/// Appends `batches` (of the table's columns, see [`eligible`]) to `table` (named `qualified`
/// in errors) in one commit recording `properties` (its application transactions and
/// metadata); `writer_properties` gives the Parquet settings for files of a given number of rows
/// (see [`super::unique_text`]). Returns the table at the new version. With no rows the commit
/// still happens, for the transactions it records.
pub(super) async fn append(
    qualified: &str,
    table: &DeltaTable,
    table_schema: SchemaRef,
    batches: Vec<RecordBatch>,
    partitions: &[&str],
    writer_properties: impl FnOnce(usize) -> WriterProperties,
    properties: CommitProperties,
) -> Result<DeltaTable> {
    let delta = |e| Error::delta(qualified, e);
    let started = Instant::now();
    let state = table.snapshot().map_err(delta)?.clone();
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let columns: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
    // From here on, the schema the files are written in.
    let table_schema = match batches.first() {
        Some(b) => file_schema(&table_schema, &b.schema()),
        None => table_schema,
    };
    let groups = group_rows(&batches, partitions)?;
    let values = groups
        .first_rows
        .iter()
        .map(|&(b, row)| partition_values(&batches[b], &columns, row))
        .collect::<Result<Vec<IndexMap<String, _>>>>()?;
    let picks = Arc::new(picks(&groups));
    let sizes = groups.sizes;
    let (batches, values) = (Arc::new(batches), Arc::new(values));
    let table_config = state.snapshot().table_configuration();
    let stats = WriterStatsConfig::from_config(table_config);
    let config = WriterConfig::new(
        table_schema.clone(),
        columns.clone(),
        // The files' settings follow the rows a file gets: a partition's, on average.
        Some(writer_properties(rows / sizes.len().max(1))),
        Some(state.table_config().target_file_size()),
        None,
        stats.num_indexed_cols,
        stats.stats_columns,
    );
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mut tasks = Vec::new();
    for share in share_out(&sizes, workers) {
        let (store, config, table_schema) = (table.object_store(), config.clone(), table_schema.clone());
        let (batches, picks, values) = (batches.clone(), picks.clone(), values.clone());
        let name = qualified.to_string();
        tasks.push(tokio::spawn(async move {
            let mut writer = DeltaWriter::new(store, config);
            // The share's rows of each batch, by partition: one copy of them that lives only
            // while they are written, each partition's in the files' schema (the table's
            // nullability and metadata, as delta-rs's write casts to; see `file_schema`) just
            // before it is.
            let written: Result<()> = async {
                for (batch, pick) in batches.iter().zip(picks.iter()) {
                    for (g, rows) in share_rows(batch, pick, &share)? {
                        let rows = in_file_schema(rows, &table_schema)?;
                        writer.write_partition(rows, &values[g]).await.map_err(|e| Error::delta(&name, e))?;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = written {
                let _ = writer.abort().await;
                return Err(e);
            }
            writer.close().await.map_err(|e| Error::delta(&name, e))
        }));
    }
    // Every task ends before an error returns: no file is written after it.
    let mut adds = Vec::new();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(written)) => adds.extend(written),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(Error::task("a file writer", e));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    adds.sort_by(|a, b| a.path.cmp(&b.path));
    let metrics = serde_json::json!({
        "num_added_files": adds.len(),
        "num_removed_files": 0,
        "num_partitions": 0,
        "num_added_rows": rows,
        "execution_time_ms": started.elapsed().as_millis() as u64,
    });
    let operation =
        DeltaOperation::Write { mode: SaveMode::Append, partition_by: Some(columns), predicate: None };
    let commit = CommitBuilder::from(properties.with_metadata([("operationMetrics".to_string(), metrics)]))
        .with_actions(adds.into_iter().map(deltalake::kernel::Action::Add).collect())
        .build(Some(&state), table.log_store(), operation)
        .await
        .map_err(delta)?;
    let mut table = table.clone();
    table.state = Some(commit.snapshot());
    Ok(table)
}

/// The rows of `batches` by partition value: groups numbered in order of first appearance.
struct Groups {
    /// Per batch, the group of each row.
    ids: Vec<Vec<u32>>,
    /// Per group, its first row: `(batch, row)`.
    first_rows: Vec<(usize, usize)>,
    /// Per group, its rows.
    sizes: Vec<usize>,
}

/// Numbers every row of `batches` by its partition values.
fn group_rows(batches: &[RecordBatch], partitions: &[&str]) -> Result<Groups> {
    let mut groups =
        Groups { ids: Vec::with_capacity(batches.len()), first_rows: Vec::new(), sizes: Vec::new() };
    let Some(first) = batches.first() else { return Ok(groups) };
    let schema = first.schema();
    let index: Vec<usize> =
        partitions.iter().map(|p| schema.index_of(p)).collect::<std::result::Result<_, _>>()?;
    let converter = RowConverter::new(
        index.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect(),
    )?;
    let mut by_key: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState> = HashMap::default();
    for (b, batch) in batches.iter().enumerate() {
        let keys =
            converter.convert_columns(&index.iter().map(|&i| batch.column(i).clone()).collect::<Vec<_>>())?;
        let mut ids = Vec::with_capacity(batch.num_rows());
        // Rows often repeat the previous row's key: it is looked up only when it changes.
        let mut last: Option<(usize, u32)> = None;
        for row in 0..batch.num_rows() {
            let key = keys.row(row);
            let g = match last {
                Some((prev, g)) if keys.row(prev) == key => g,
                _ => *by_key.entry(key.as_ref().into()).or_insert_with(|| {
                    groups.first_rows.push((b, row));
                    groups.sizes.push(0);
                    (groups.sizes.len() - 1) as u32
                }),
            };
            groups.sizes[g as usize] += 1;
            ids.push(g);
            last = Some((row, g));
        }
        groups.ids.push(ids);
    }
    Ok(groups)
}

/// Where a partition's rows are in one batch.
#[derive(Debug, PartialEq)]
enum Pick {
    /// None of them.
    None,
    /// A run of consecutive rows (a silver chunk's rows come date by date): a slice, no copy.
    Range(std::ops::Range<usize>),
    /// Rows here and there, in input order: a `take`.
    Rows(UInt32Array),
}

/// Per batch, per group, where the group's rows are.
fn picks(groups: &Groups) -> Vec<Vec<Pick>> {
    let count = groups.sizes.len();
    groups
        .ids
        .iter()
        .map(|ids| {
            let mut rows: Vec<Vec<u32>> = vec![Vec::new(); count];
            for (row, &g) in ids.iter().enumerate() {
                rows[g as usize].push(row as u32);
            }
            rows.into_iter()
                .map(|r| match (r.first(), r.last()) {
                    (Some(&a), Some(&z)) if (z - a) as usize + 1 == r.len() => {
                        Pick::Range(a as usize..z as usize + 1)
                    }
                    (Some(_), _) => Pick::Rows(UInt32Array::from(r)),
                    _ => Pick::None,
                })
                .collect()
        })
        .collect()
}

/// The rows of `share`'s groups in `batch` (whose rows `pick` places), one batch per group, in
/// the share's order: slices when every group's rows sit side by side (a silver chunk's), else
/// one `take` that gathers them all, group after group, then slices of it. One gather per batch
/// instead of one per group halves the time it takes: the per-group gathers each cross the
/// whole batch for a few of its rows (measured with arrow 59, 36,000 rows of events over 60
/// dates: 55-85 ms instead of 120-136 ms).
fn share_rows(batch: &RecordBatch, pick: &[Pick], share: &[usize]) -> Result<Vec<(usize, RecordBatch)>> {
    if !share.iter().any(|&g| matches!(pick[g], Pick::Rows(_))) {
        return Ok(share
            .iter()
            .filter_map(|&g| match &pick[g] {
                Pick::Range(r) => Some((g, batch.slice(r.start, r.len()))),
                _ => None,
            })
            .collect());
    }
    let mut rows: Vec<u32> = Vec::new();
    let mut bounds = Vec::new();
    for &g in share {
        let start = rows.len();
        match &pick[g] {
            Pick::None => continue,
            Pick::Range(r) => rows.extend(r.start as u32..r.end as u32),
            Pick::Rows(r) => rows.extend_from_slice(r.values()),
        }
        bounds.push((g, start, rows.len() - start));
    }
    let gathered = take_record_batch(batch, &UInt32Array::from(rows))?;
    Ok(bounds.into_iter().map(|(g, start, len)| (g, gathered.slice(start, len))).collect())
}

/// Deals the groups (given by their sizes) to at most `workers` shares of about equal rows:
/// largest first, each to the lightest share; a share's groups in their own order.
fn share_out(sizes: &[usize], workers: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(sizes[g]));
    let mut load = vec![0usize; workers.clamp(1, sizes.len().max(1))];
    let mut shares: Vec<Vec<usize>> = vec![Vec::new(); load.len()];
    for g in order {
        let lightest = (0..load.len()).min_by_key(|&w| load[w]).unwrap_or(0);
        load[lightest] += sizes[g];
        shares[lightest].push(g);
    }
    shares.retain(|s| !s.is_empty());
    for share in &mut shares {
        share.sort_unstable();
    }
    shares
}

/// The partition values of `batch`'s `row`, as delta-rs keys its files.
fn partition_values<S: ScalarExt>(
    batch: &RecordBatch,
    columns: &[String],
    row: usize,
) -> Result<IndexMap<String, S>> {
    columns
        .iter()
        .map(|c| {
            let value = batch
                .column_by_name(c)
                .and_then(|column| S::from_array(column.as_ref() as &dyn Array, row))
                .ok_or_else(|| {
                    Error::Internal(format!("partition column {c} has no value to key a file by"))
                })?;
            Ok((c.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Date32Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn batch(dates: &[i32], ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("d", DataType::Date32, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(ids.to_vec())), Arc::new(Date32Array::from(dates.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn text_is_written_in_the_layout_it_comes_in_with_the_tables_nullability() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let table = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("id", DataType::Int64, true),
        ]));
        let incoming = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8View, true),
            Field::new("id", DataType::Int32, true),
        ]));
        let files = file_schema(&table, &incoming);
        assert_eq!(files.field(0), &Field::new("name", DataType::Utf8View, false));
        // Anything but text keeps the table's type (the batch is cast to it).
        assert_eq!(files.field(1), table.field(1));
    }

    #[test]
    fn rows_are_grouped_by_partition_in_input_order() {
        let batches = vec![batch(&[3, 1, 3, 2, 1], &[0, 1, 2, 3, 4]), batch(&[2, 2, 5], &[5, 6, 7])];
        let groups = group_rows(&batches, &["d"]).unwrap();
        assert_eq!(groups.ids, vec![vec![0, 1, 0, 2, 1], vec![2, 2, 3]]);
        assert_eq!(groups.first_rows, vec![(0, 0), (0, 1), (0, 3), (1, 2)]);
        assert_eq!(groups.sizes, vec![2, 2, 3, 1]);
        let picks = picks(&groups);
        assert_eq!(
            picks[0],
            vec![
                Pick::Rows(UInt32Array::from(vec![0, 2])),
                Pick::Rows(UInt32Array::from(vec![1, 4])),
                Pick::Range(3..4),
                Pick::None
            ]
        );
        // Rows of a group side by side: a slice, no copy.
        assert_eq!(picks[1], vec![Pick::None, Pick::None, Pick::Range(0..2), Pick::Range(2..3)]);
    }

    #[test]
    fn a_share_of_scattered_rows_is_gathered_once_and_sliced_by_group() {
        let batches = vec![batch(&[3, 1, 3, 2, 1], &[0, 1, 2, 3, 4]), batch(&[2, 2, 5], &[5, 6, 7])];
        let groups = group_rows(&batches, &["d"]).unwrap();
        let picks = picks(&groups);
        let ids = |b: &RecordBatch| b.column(0).as_primitive::<Int64Type>().values().to_vec();
        // Groups 0 (d=3) and 2 (d=2) of the first batch: rows here and there, then a run.
        let got = share_rows(&batches[0], &picks[0], &[0, 2, 3]).unwrap();
        let got: Vec<(usize, Vec<i64>)> = got.iter().map(|(g, b)| (*g, ids(b))).collect();
        assert_eq!(got, vec![(0, vec![0, 2]), (2, vec![3])]);
        // Only runs: slices of the batch itself.
        let got = share_rows(&batches[1], &picks[1], &[2, 3]).unwrap();
        let got: Vec<(usize, Vec<i64>)> = got.iter().map(|(g, b)| (*g, ids(b))).collect();
        assert_eq!(got, vec![(2, vec![5, 6]), (3, vec![7])]);
        assert!(share_rows(&batches[1], &picks[1], &[0, 1]).unwrap().is_empty());
    }

    /// Appends land one file per date with the rows, partition values, statistics, transaction
    /// and metrics delta-rs's own write gives; text read back from Parquet (`Utf8View`) goes in
    /// as the table's `Utf8`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_writes_a_file_per_partition_value_in_one_commit() {
        use crate::lake::{Lake, Layer, Txn, session};
        use datafusion::arrow::array::{StringArray, StringViewArray};
        use futures::TryStreamExt;
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("d", DataType::Date32, true),
        ]));
        let rows = |ids: &[i64], dates: &[i32]| {
            let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids.to_vec())),
                    Arc::new(StringArray::from(names)),
                    Arc::new(Date32Array::from(dates.to_vec())),
                ],
            )
            .unwrap()
        };
        lake.overwrite(Layer::Bronze, "t", vec![rows(&[0], &[20_000])], schema.clone(), &["d"])
            .await
            .unwrap();
        let table = lake.open(Layer::Bronze, "t").await.unwrap().unwrap();
        assert!(eligible(&table, &schema, &["d"]).is_some());
        assert!(eligible(&table, &schema, &[]).is_none());
        // Rows of three dates, unordered, over two batches; the second's text as views.
        let second = rows(&[4, 5], &[20_001, 20_002]);
        let views: StringViewArray = second.column(1).as_string::<i32>().iter().collect();
        let view_schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8View, true),
            Field::new("d", DataType::Date32, true),
        ]));
        let second = RecordBatch::try_new(
            view_schema.clone(),
            vec![second.column(0).clone(), Arc::new(views), second.column(2).clone()],
        )
        .unwrap();
        assert!(eligible(&table, &view_schema, &["d"]).is_some());
        let txn = Txn::batch("cloudlake.test", 7);
        let table = lake
            .append_txn(
                Layer::Bronze,
                "t",
                vec![rows(&[1, 2, 3], &[20_002, 20_000, 20_002]), second],
                schema,
                &["d"],
                &txn,
            )
            .await
            .unwrap();
        assert_eq!(table.version(), Some(1));
        assert_eq!(lake.txn_version(Layer::Bronze, "t", "cloudlake.test").await.unwrap(), Some(7));
        // One new file per date, each keyed by its date, with statistics.
        let state = table.snapshot().unwrap();
        let mut added: Vec<(String, i64)> = state
            .snapshot()
            .log_data()
            .iter()
            .map(|f| (f.path().to_string(), f.num_records().map_or(-1, |n| n as i64)))
            .filter(|(p, _)| !p.is_empty())
            .collect();
        added.sort();
        let dirs: Vec<&str> = added.iter().map(|(p, _)| p.split('/').next().unwrap()).collect();
        assert_eq!(dirs, vec!["d=2024-10-04", "d=2024-10-04", "d=2024-10-05", "d=2024-10-06"]);
        assert!(added.iter().all(|(_, n)| *n > 0), "{added:?}");
        let history: Vec<_> = table.history(Some(1)).try_collect().await.unwrap();
        let metrics = history[0].info.get("operationMetrics").unwrap();
        assert_eq!(metrics.get("num_added_rows").and_then(|n| n.as_u64()), Some(5));
        assert_eq!(metrics.get("num_added_files").and_then(|n| n.as_u64()), Some(3));
        // The rows read back whole, in their dates.
        let ctx = session();
        lake.register(&ctx, Layer::Bronze, "t").await.unwrap();
        let got = ctx
            .sql("SELECT id, CAST(name AS VARCHAR) AS name, CAST(d AS INT) AS d FROM bronze_t ORDER BY id")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let got = datafusion::arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
        let ids: Vec<i64> = got.column(0).as_primitive::<Int64Type>().values().to_vec();
        let names: Vec<String> = datafusion::arrow::compute::cast(got.column(1), &DataType::Utf8)
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|n| n.unwrap().to_string())
            .collect();
        let dates: Vec<i32> =
            got.column(2).as_primitive::<datafusion::arrow::datatypes::Int32Type>().values().to_vec();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(names, vec!["n0", "n1", "n2", "n3", "n4", "n5"]);
        assert_eq!(dates, vec![20_000, 20_002, 20_000, 20_002, 20_001, 20_002]);
    }

    #[test]
    fn groups_are_dealt_by_rows() {
        assert_eq!(share_out(&[10, 1, 9, 2], 2), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(share_out(&[5], 4), vec![vec![0]]);
        assert!(share_out(&[], 2).is_empty());
    }
}
