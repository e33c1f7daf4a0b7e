//! `cloudlake publish`: every serving view ([`crate::serving::views::TABLES`]) into Cassandra.
//!
//! Partition by partition (at most `concurrency` in flight), the view's rows are compared with
//! the rows the partition holds:
//! - new or changed rows are upserted on their natural key with one prepared `INSERT`, in
//!   unlogged batches that never leave the partition (one mutation on the node); a NULL is sent
//!   as "unset" unless it must clear a stored value, so no needless tombstones are written;
//! - rows the view no longer has are deleted, and so are whole partitions it no longer has;
//! - unchanged rows are not written at all: publishing twice changes nothing.
//!
//! Every request is retried with backoff for up to `retry_seconds`. A publish interrupted at
//! any point (node stopped, process killed) leaves each row either old or new, never torn; the
//! next publish converges to exactly the lake's marts. `serving_state` (date span and row
//! counts) is written last.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Date32Type;
use futures::{StreamExt, TryStreamExt};
use scylla::statement::batch::{Batch, BatchStatement, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimestamp, CqlValue, MaybeUnset};
use serde::{Deserialize, Serialize};

use super::Cassandra;
use super::values::to_cql;
use crate::lake::Lake;
use crate::serving::views::{GOLD_MARTS, SPAN_SQL, ServingTable, TABLES};
use crate::{Error, Result};

/// Rows per unlogged batch (all of one partition): about 10 KB, under Cassandra's default
/// 50 KiB batch failure threshold.
pub const MAX_BATCH_ROWS: usize = 50;

/// What one publish did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishReport {
    /// Per serving table, in publishing order.
    pub tables: Vec<TablePublish>,
    /// Wall time of the whole publish, in seconds.
    pub seconds: f64,
}

/// What happened to one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TablePublish {
    /// Table name in the keyspace.
    pub table: String,
    /// Rows of the view.
    pub rows: u64,
    /// Rows written because they were new or changed.
    pub written: u64,
    /// Rows deleted because the view no longer has their key.
    pub deleted: u64,
    /// Whole partitions deleted because the view no longer has them.
    pub deleted_partitions: u64,
}

impl PublishReport {
    /// Rows of every view.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Rows written (new or changed) over every table.
    pub fn written(&self) -> u64 {
        self.tables.iter().map(|t| t.written).sum()
    }

    /// Rows and partitions deleted over every table.
    pub fn deleted(&self) -> u64 {
        self.tables.iter().map(|t| t.deleted + t.deleted_partitions).sum()
    }
}

/// Publishes the lake's gold marts to `c`, creating the keyspace and tables first if needed.
pub async fn publish(lake: &Lake, c: &Cassandra) -> Result<PublishReport> {
    let started = Instant::now();
    super::schema::apply(c).await?;
    let ctx = crate::lake::session();
    crate::serving::lake::register_marts(lake, &ctx, &GOLD_MARTS).await?;
    let mut report = PublishReport::default();
    for table in TABLES {
        let t0 = Instant::now();
        let done = publish_table(&ctx, c, table).await?;
        tracing::info!(
            "published {}: {} rows, {} written, {} deleted, {} partitions deleted in {:.0} ms",
            table.name,
            done.rows,
            done.written,
            done.deleted,
            done.deleted_partitions,
            t0.elapsed().as_secs_f64() * 1000.0
        );
        report.tables.push(done);
    }
    write_state(&ctx, c, &report).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The statements and column positions of one table.
struct Plan {
    what: String,
    insert: PreparedStatement,
    delete_row: PreparedStatement,
    read_partition: String,
    key_at: Vec<usize>,
    partition_at: Vec<usize>,
}

async fn publish_table(
    ctx: &datafusion::prelude::SessionContext,
    c: &Cassandra,
    table: &ServingTable,
) -> Result<TablePublish> {
    let ks = c.keyspace();
    let df = ctx
        .sql(&format!("SELECT * FROM ({}) ORDER BY {}", table.sql, table.partition_key.join(", ")))
        .await?;
    let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
    let position = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| Error::Internal(format!("serving view {} has no key column {name}", table.name)))
    };
    let key = table.primary_key();
    let equals = |cols: &[&str]| cols.iter().map(|k| format!("{k} = ?")).collect::<Vec<_>>().join(" AND ");
    let plan = Plan {
        what: format!("publishing {ks}.{}", table.name),
        insert: c
            .prepare(&format!(
                "INSERT INTO {ks}.{} ({}) VALUES ({})",
                table.name,
                columns.join(", "),
                vec!["?"; columns.len()].join(", ")
            ))
            .await?,
        delete_row: c.prepare(&format!("DELETE FROM {ks}.{} WHERE {}", table.name, equals(&key))).await?,
        read_partition: format!(
            "SELECT {} FROM {ks}.{} WHERE {}",
            columns.join(", "),
            table.name,
            equals(table.partition_key)
        ),
        key_at: key.iter().map(|k| position(k)).collect::<Result<_>>()?,
        partition_at: table.partition_key.iter().map(|k| position(k)).collect::<Result<_>>()?,
    };
    let mut done = TablePublish { table: table.name.to_string(), ..Default::default() };
    let mut partitions_seen: HashSet<String> = HashSet::new();
    let mut pending: Vec<CqlRow> = Vec::new();
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        pending.extend(cql_rows(&batch?)?);
        let mut parts = split_partitions(std::mem::take(&mut pending), &plan.partition_at);
        // The last partition may continue in the next record batch.
        pending = parts.pop().unwrap_or_default();
        sync_partitions(c, &plan, parts, &mut done, &mut partitions_seen).await?;
    }
    if !pending.is_empty() {
        sync_partitions(c, &plan, vec![pending], &mut done, &mut partitions_seen).await?;
    }
    done.deleted_partitions = delete_partitions(c, table, &partitions_seen).await?;
    Ok(done)
}

type CqlRow = Vec<Option<CqlValue>>;

fn cql_rows(batch: &RecordBatch) -> Result<Vec<CqlRow>> {
    (0..batch.num_rows()).map(|r| batch.columns().iter().map(|a| to_cql(a, r)).collect()).collect()
}

/// A row's values at `at` (a key) as a comparable string.
fn key_of(row: &[Option<CqlValue>], at: &[usize]) -> String {
    format!("{:?}", at.iter().map(|&i| row.get(i)).collect::<Vec<_>>())
}

/// Splits rows sorted by partition into one group per partition.
fn split_partitions(rows: Vec<CqlRow>, partition_at: &[usize]) -> Vec<Vec<CqlRow>> {
    let mut parts: Vec<Vec<CqlRow>> = Vec::new();
    let mut current = String::new();
    for row in rows {
        let key = key_of(&row, partition_at);
        match parts.last_mut() {
            Some(part) if key == current => part.push(row),
            _ => {
                current = key;
                parts.push(vec![row]);
            }
        }
    }
    parts
}

/// What one partition needed.
#[derive(Default)]
struct PartitionSync {
    rows: u64,
    written: u64,
    deleted: u64,
}

async fn sync_partitions(
    c: &Cassandra,
    plan: &Plan,
    parts: Vec<Vec<CqlRow>>,
    done: &mut TablePublish,
    seen: &mut HashSet<String>,
) -> Result<()> {
    for part in &parts {
        seen.insert(key_of(&part[0], &plan.partition_at));
    }
    let outcomes: Vec<PartitionSync> =
        futures::stream::iter(parts.into_iter().map(|p| sync_partition(c, plan, p)))
            .buffer_unordered(c.config().concurrency)
            .try_collect()
            .await?;
    for o in outcomes {
        done.rows += o.rows;
        done.written += o.written;
        done.deleted += o.deleted;
    }
    Ok(())
}

/// Makes one partition hold exactly `rows`: reads it, writes what is new or changed, deletes
/// what is gone.
async fn sync_partition(c: &Cassandra, plan: &Plan, rows: Vec<CqlRow>) -> Result<PartitionSync> {
    let partition: Vec<Option<CqlValue>> = plan.partition_at.iter().map(|&i| rows[0][i].clone()).collect();
    let mut stored: HashMap<String, CqlRow> = c
        .rows(&plan.what, &plan.read_partition, &partition)
        .await?
        .into_iter()
        .map(|r| (key_of(&r.columns, &plan.key_at), r.columns))
        .collect();
    let mut outcome = PartitionSync { rows: rows.len() as u64, ..Default::default() };
    let mut writes: Vec<Vec<MaybeUnset<Option<CqlValue>>>> = Vec::new();
    for row in rows {
        let old = stored.remove(&key_of(&row, &plan.key_at));
        if old.as_ref() == Some(&row) {
            continue;
        }
        writes.push(upsert_values(row, old.as_deref()));
    }
    outcome.written = writes.len() as u64;
    for chunk in writes.chunks(MAX_BATCH_ROWS) {
        send(c, &plan.what, &plan.insert, chunk).await?;
    }
    let deletes: Vec<CqlRow> =
        stored.into_values().map(|old| plan.key_at.iter().map(|&i| old[i].clone()).collect()).collect();
    outcome.deleted = deletes.len() as u64;
    for chunk in deletes.chunks(MAX_BATCH_ROWS) {
        send(c, &plan.what, &plan.delete_row, chunk).await?;
    }
    Ok(outcome)
}

/// The INSERT values of `row`: a NULL is "unset" (no tombstone) unless it clears a stored value.
fn upsert_values(row: CqlRow, old: Option<&[Option<CqlValue>]>) -> Vec<MaybeUnset<Option<CqlValue>>> {
    row.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(v) => MaybeUnset::Set(Some(v)),
            None if old.is_some_and(|o| o.get(i).is_some_and(Option::is_some)) => MaybeUnset::Set(None),
            None => MaybeUnset::Unset,
        })
        .collect()
}

/// Sends `stmt` once per row of `rows` (all in one partition): alone, or as an unlogged batch.
async fn send<R>(c: &Cassandra, what: &str, stmt: &PreparedStatement, rows: &[R]) -> Result<()>
where
    R: scylla::serialize::row::SerializeRow + Sync,
{
    match rows {
        [] => Ok(()),
        [one] => {
            c.retry(what, || async { Ok(c.session().execute_unpaged(stmt, one).await.map(|_| ())?) }).await
        }
        many => {
            let batch = Batch::new_with_statements(
                BatchType::Unlogged,
                vec![BatchStatement::PreparedStatement(stmt.clone()); many.len()],
            );
            c.retry(what, || async { Ok(c.session().batch(&batch, many).await.map(|_| ())?) }).await
        }
    }
}

/// Deletes the partitions of `table` that the view no longer has; returns how many.
async fn delete_partitions(c: &Cassandra, table: &ServingTable, keep: &HashSet<String>) -> Result<u64> {
    let ks = c.keyspace();
    let pk = table.partition_key;
    let scan = format!("SELECT DISTINCT {} FROM {ks}.{}", pk.join(", "), table.name);
    let all: Vec<usize> = (0..pk.len()).collect();
    let what = format!("deleting stale partitions of {ks}.{}", table.name);
    let stale: Vec<CqlRow> = c
        .rows(&what, &scan, &())
        .await?
        .into_iter()
        .map(|r| r.columns)
        .filter(|r| !keep.contains(&key_of(r, &all)))
        .collect();
    if stale.is_empty() {
        return Ok(0);
    }
    let equals = pk.iter().map(|k| format!("{k} = ?")).collect::<Vec<_>>().join(" AND ");
    let stmt = c.prepare(&format!("DELETE FROM {ks}.{} WHERE {equals}", table.name)).await?;
    let n = stale.len() as u64;
    futures::stream::iter(stale.into_iter().map(|row| {
        let (stmt, what) = (&stmt, &what);
        async move { send(c, what, stmt, &[row]).await }
    }))
    .buffer_unordered(c.config().concurrency)
    .try_collect::<()>()
    .await?;
    Ok(n)
}

/// Writes the `serving_state` row: date span of the marts and rows per table.
async fn write_state(
    ctx: &datafusion::prelude::SessionContext,
    c: &Cassandra,
    report: &PublishReport,
) -> Result<()> {
    let batches = ctx.sql(SPAN_SQL).await?.collect().await?;
    let batch =
        batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| Error::Internal("empty span".into()))?;
    let mut dates: Vec<Option<CqlDate>> = Vec::new();
    for col in batch.columns() {
        let cast = datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Date32)?;
        let d = cast.as_primitive::<Date32Type>();
        dates.push(
            datafusion::arrow::array::Array::is_valid(d, 0).then(|| super::values::cql_day(d.value(0))),
        );
    }
    let rows = CqlValue::Map(
        report
            .tables
            .iter()
            .map(|t| (CqlValue::Text(t.table.clone()), CqlValue::BigInt(t.rows as i64)))
            .collect(),
    );
    let ks = c.keyspace();
    let insert = format!(
        "INSERT INTO {ks}.serving_state (id, reference_date, first_usage_date, last_usage_date, first_ticket_date, \
         last_ticket_date, first_month, last_month, published_at, rows) VALUES ('current', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    let stmt = c.prepare(&insert).await?;
    let mut values: Vec<Option<CqlValue>> = dates.into_iter().map(|d| d.map(CqlValue::Date)).collect();
    values.push(Some(CqlValue::Timestamp(CqlTimestamp(chrono::Utc::now().timestamp_millis()))));
    values.push(Some(rows));
    c.retry("writing serving_state", || async {
        Ok(c.session().execute_unpaged(&stmt, &values).await.map(|_| ())?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_by_partition_and_nulls_only_clear_stored_values() {
        let row = |org: &str, n: i64| vec![Some(CqlValue::Text(org.into())), Some(CqlValue::BigInt(n))];
        let mut rows: Vec<CqlRow> = (0..3).map(|n| row("a", n)).collect();
        rows.push(row("b", 0));
        rows.extend((0..2).map(|n| row("c", n)));
        let sizes: Vec<usize> = split_partitions(rows, &[0]).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 1, 2]);
        let new = vec![Some(CqlValue::Text("a".into())), None, None];
        let old = vec![Some(CqlValue::Text("a".into())), Some(CqlValue::BigInt(1)), None];
        let v = upsert_values(new.clone(), Some(&old));
        assert!(matches!(v[1], MaybeUnset::Set(None)), "a stored value is cleared");
        assert!(matches!(v[2], MaybeUnset::Unset), "nothing stored: no tombstone");
        assert!(upsert_values(new, None).iter().skip(1).all(|x| matches!(x, MaybeUnset::Unset)));
    }
}
