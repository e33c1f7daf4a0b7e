//! The lake: Delta tables under one root, laid out as SPEC section 3 says.
//!
//! ```text
//! <lake>/bronze/<source>  <lake>/silver/<table>  <lake>/quarantine/<source>  <lake>/gold/<mart>
//! <lake>/_checkpoints/<stream>  <lake>/_runs/<run_id>.json
//! ```
//! The lake is a local folder or a prefix in S3-compatible object storage ([`Lake`]).
//! Every table is a plain Delta table (delta-rs), readable by Spark, DuckDB, Polars or the Python
//! `deltalake` package. This module opens, creates and appends to them, registers them in a
//! DataFusion session under `<layer>_<name>`, and implements the one write pattern bronze and
//! quarantine share: *append the rows whose key the table does not hold yet*
//! ([`Lake::append_new_rows`]), which makes re-runs and replays idempotent.

pub mod maintain;
mod partitioned;
pub mod upsert;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use object_store::ObjectStoreExt;
use url::Url;

use crate::{Error, Result};

/// A layer of the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Typed, deduplicated landing data.
    Bronze,
    /// Conformed, validated, enriched data.
    Silver,
    /// Rejected records, never silently dropped.
    Quarantine,
    /// Business marts.
    Gold,
}

impl Layer {
    /// Every layer, in pipeline order.
    pub const ALL: [Layer; 4] = [Layer::Bronze, Layer::Silver, Layer::Quarantine, Layer::Gold];

    /// The folder name and the SQL table-name prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Quarantine => "quarantine",
            Layer::Gold => "gold",
        }
    }
}

/// A lake: a local folder, or a prefix in S3-compatible object storage (`s3://bucket/prefix`).
///
/// An object-storage lake is configured the way the AWS tools are, from the environment:
/// `AWS_ENDPOINT_URL` (for an S3-compatible server), `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint.
/// Delta commits use S3's conditional writes, so no lock service is needed. A stream's
/// checkpoint folder and its lock stay on the local disk ([`Lake::state_dir`]).
#[derive(Debug, Clone)]
pub struct Lake {
    /// The lake's URL, ending with `/` (`file://` for a local lake).
    url: Url,
    /// The local folder: the lake itself, or for a lake in object storage, the folder of its
    /// stream checkpoints.
    dir: PathBuf,
    remote: bool,
    /// The tables opened so far, shared by clones of this lake: see [`Handles`].
    handles: Handles,
}

/// Delta table handles kept between uses, so that opening a table again reads only the commits
/// made since (`update_incremental`), not its whole log. A stream's event tables gain a file per
/// date per micro-batch: after 50 micro-batches of a live feed their logs held 16–23 MB of JSON
/// and 11,000 files, and every micro-batch opened them several times, at about 0.3 s each.
#[derive(Debug, Clone, Default)]
struct Handles(Arc<std::sync::Mutex<std::collections::HashMap<(Layer, String), DeltaTable>>>);

impl Handles {
    fn get(&self, layer: Layer, name: &str) -> Option<DeltaTable> {
        self.0.lock().ok()?.get(&(layer, name.to_string())).cloned()
    }

    /// Keeps `table` unless a newer version of it is kept already (two tasks may write one
    /// table in turn and return in any order).
    fn keep(&self, layer: Layer, name: &str, table: &DeltaTable) {
        let Some(version) = table.version() else { return };
        let Ok(mut map) = self.0.lock() else { return };
        let key = (layer, name.to_string());
        if map.get(&key).and_then(DeltaTable::version).is_none_or(|kept| kept <= version) {
            map.insert(key, table.clone());
        }
    }

    fn forget(&self, layer: Layer, name: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&(layer, name.to_string()));
        }
    }
}

impl Lake {
    /// A lake at `root`: a folder (created on first write; relative paths are taken from the
    /// current directory) or an `s3://bucket/prefix` URL.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let text = root.to_string_lossy();
        if let Some((scheme, _)) = text.split_once("://") {
            let url = Url::parse(&text)
                .map_err(|e| Error::Usage(format!("lake location {text} is not a valid URL: {e}")))?;
            match scheme {
                "file" => {
                    let path = url
                        .to_file_path()
                        .map_err(|_| Error::Usage(format!("lake location {text} is not a local path")))?;
                    return Lake::new(path);
                }
                "s3" | "s3a" => return Ok(Lake::remote(url)),
                other => {
                    return Err(Error::Usage(format!(
                        "lake location {text}: the {other}:// scheme is not supported; use a folder or s3://bucket/prefix"
                    )));
                }
            }
        }
        let dir = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir().map_err(|e| Error::io(root, e))?.join(root)
        };
        let url = Url::from_directory_path(&dir)
            .map_err(|_| Error::Usage(format!("lake folder {} is not a valid path", dir.display())))?;
        Ok(Lake { url, dir, remote: false, handles: Handles::default() })
    }

    fn remote(mut url: Url) -> Self {
        // The S3 handlers register themselves at start-up; registering again is harmless and
        // does not depend on the linker keeping that constructor.
        deltalake::aws::register_handlers(None);
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let dir = match std::env::var_os("CLOUDLAKE_STATE_DIR") {
            Some(d) => PathBuf::from(d),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join(".local/state/cloudlake"),
        };
        let dir =
            dir.join(url.scheme()).join(url.host_str().unwrap_or("_")).join(url.path().trim_matches('/'));
        Lake { url, dir, remote: true, handles: Handles::default() }
    }

    /// Where the lake is, as users write it: a folder or a URL.
    pub fn location(&self) -> String {
        if self.remote { self.url.to_string() } else { self.dir.display().to_string() }
    }

    /// True for a lake in object storage.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The local folder of the lake's stream checkpoints and lock: the lake's own folder, or for
    /// a lake in object storage `$CLOUDLAKE_STATE_DIR/<scheme>/<bucket>/<prefix>` (by default
    /// under `~/.local/state/cloudlake`).
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Location of a table, as users write it.
    pub fn table_location(&self, layer: Layer, name: &str) -> String {
        if self.remote {
            format!("{}{}/{}", self.url, layer.as_str(), name)
        } else {
            self.dir.join(layer.as_str()).join(name).display().to_string()
        }
    }

    fn table_url(&self, layer: Layer, name: &str) -> Result<Url> {
        if self.remote {
            return self
                .url
                .join(&format!("{}/{}/", layer.as_str(), name))
                .map_err(|e| Error::Internal(format!("table URL of {}: {e}", qualified(layer, name))));
        }
        let path = self.dir.join(layer.as_str()).join(name);
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Url::from_directory_path(&path)
            .map_err(|_| Error::Internal(format!("table path {} is not absolute", path.display())))
    }

    /// The object store at the lake's root (paths relative to it).
    fn store(&self) -> Result<Arc<dyn deltalake::ObjectStore>> {
        let err = |e| Error::delta(self.location(), e);
        Ok(deltalake::DeltaTableBuilder::from_url(self.url.clone())
            .map_err(err)?
            .build_storage()
            .map_err(err)?
            .object_store(None))
    }

    /// True when a Delta table exists at `layer/name`.
    pub async fn exists(&self, layer: Layer, name: &str) -> Result<bool> {
        if !self.remote {
            return Ok(self.dir.join(layer.as_str()).join(name).join("_delta_log").is_dir());
        }
        let err = |e| Error::delta(qualified(layer, name), e);
        let store = deltalake::DeltaTableBuilder::from_url(self.table_url(layer, name)?)
            .map_err(err)?
            .build_storage()
            .map_err(err)?;
        store.is_delta_table_location().await.map_err(err)
    }

    /// Opens a table at its latest version, or `None` when no Delta table exists there yet.
    /// A table opened before is brought up to date from its kept handle ([`Handles`]).
    pub async fn open(&self, layer: Layer, name: &str) -> Result<Option<DeltaTable>> {
        if let Some(mut table) = self.handles.get(layer, name) {
            match table.update_incremental(None).await {
                Ok(()) => {
                    self.handles.keep(layer, name, &table);
                    return Ok(Some(table));
                }
                // Opened afresh below (its log may have been cleaned up meanwhile).
                Err(e) => {
                    tracing::debug!(table = %qualified(layer, name), error = %e, "Table reopened.");
                    self.handles.forget(layer, name);
                }
            }
        }
        if !self.exists(layer, name).await? {
            return Ok(None);
        }
        let url = self.table_url(layer, name)?;
        let table = deltalake::open_table(url).await.map_err(|e| Error::delta(qualified(layer, name), e))?;
        self.handles.keep(layer, name, &table);
        Ok(Some(table))
    }

    /// Writes a file under the lake's root (`_runs/<id>.json`), replacing any file of that name.
    pub async fn put_file(&self, relative: &str, bytes: Vec<u8>) -> Result<String> {
        if !self.remote {
            let path = self.dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
            return Ok(path.display().to_string());
        }
        self.store()?
            .put(&deltalake::Path::from(relative), bytes.into())
            .await
            .map_err(|e| self.object_error(relative, e))?;
        Ok(format!("{}{relative}", self.url))
    }

    /// Reads a file under the lake's root.
    pub async fn read_file(&self, relative: &str) -> Result<Vec<u8>> {
        if !self.remote {
            let path = self.dir.join(relative);
            return std::fs::read(&path).map_err(|e| Error::io(&path, e));
        }
        let store = self.store()?;
        let got =
            store.get(&deltalake::Path::from(relative)).await.map_err(|e| self.object_error(relative, e))?;
        Ok(got.bytes().await.map_err(|e| self.object_error(relative, e))?.to_vec())
    }

    /// Names of the files directly in folder `relative` of the lake (empty when it is absent).
    pub async fn list_files(&self, relative: &str) -> Result<Vec<String>> {
        if !self.remote {
            let Ok(entries) = std::fs::read_dir(self.dir.join(relative)) else { return Ok(vec![]) };
            return Ok(entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect());
        }
        let listed = self
            .store()?
            .list_with_delimiter(Some(&deltalake::Path::from(relative)))
            .await
            .map_err(|e| self.object_error(relative, e))?;
        Ok(listed.objects.into_iter().filter_map(|o| o.location.filename().map(str::to_string)).collect())
    }

    fn object_error(&self, relative: &str, e: deltalake::ObjectStoreError) -> Error {
        Error::Storage { location: format!("{}{relative}", self.url), source: Box::new(e) }
    }

    /// Appends batches to a table, creating it (partitioned by `partitions`) if absent.
    pub async fn append(
        &self,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        partitions: &[&str],
    ) -> Result<DeltaTable> {
        self.write(layer, name, batches, partitions, SaveMode::Append, None).await
    }

    /// Appends batches as one commit that also records `txn` (a Delta application transaction),
    /// creating the table if absent. With no rows the commit still happens, so the table records
    /// that the micro-batch was applied.
    pub async fn append_txn(
        &self,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: datafusion::arrow::datatypes::SchemaRef,
        partitions: &[&str],
        txn: &Txn,
    ) -> Result<DeltaTable> {
        self.save(layer, name, batches, schema, partitions, SaveMode::Append, Some(txn)).await
    }

    /// The last version of application `app_id` a table recorded ([`Txn`]); `None` when the
    /// table or the application is unknown to it.
    pub async fn txn_version(&self, layer: Layer, name: &str, app_id: &str) -> Result<Option<i64>> {
        let Some(table) = self.open(layer, name).await? else { return Ok(None) };
        let err = |e| Error::delta(qualified(layer, name), e);
        table
            .snapshot()
            .map_err(err)?
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(err)
    }

    /// Replaces a table's contents (creating it if absent). An empty input writes an empty
    /// table with `schema`, so readers always find the table. The schema may change between
    /// cloudlake versions, so it is overwritten too.
    pub async fn overwrite(
        &self,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: datafusion::arrow::datatypes::SchemaRef,
        partitions: &[&str],
    ) -> Result<DeltaTable> {
        self.save(layer, name, batches, schema, partitions, SaveMode::Overwrite, None).await
    }

    /// [`Lake::overwrite`] in a commit that also records `txn`.
    pub async fn overwrite_txn(
        &self,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: datafusion::arrow::datatypes::SchemaRef,
        partitions: &[&str],
        txn: &Txn,
    ) -> Result<DeltaTable> {
        self.save(layer, name, batches, schema, partitions, SaveMode::Overwrite, Some(txn)).await
    }

    /// Overwrites a table with the rows of `query`, streamed into its files (never all held in
    /// memory), in a commit recording `txn` when given; returns the rows written. The query runs
    /// in this process: for a local session, not a cluster's.
    pub async fn overwrite_query(
        &self,
        layer: Layer,
        name: &str,
        query: datafusion::prelude::DataFrame,
        partitions: &[&str],
        txn: Option<&Txn>,
    ) -> Result<u64> {
        use futures::TryStreamExt;
        // The plan holds its tables; delta-rs runs it in its own session (whose planner knows
        // the write's own plan nodes).
        let input = WriteInput::Plan(query.into_unoptimized_plan());
        let table = self.write_input(layer, name, input, partitions, SaveMode::Overwrite, txn).await?;
        // The write's own count, from the commit it made.
        let last: Vec<_> = table
            .history(Some(1))
            .try_collect()
            .await
            .map_err(|e| Error::delta(qualified(layer, name), e))?;
        last.first()
            .and_then(|c| c.info.get("operationMetrics"))
            .and_then(|m| m.get("num_added_rows"))
            .and_then(|n| n.as_u64())
            .ok_or_else(|| {
                Error::Internal(format!("the write of {} recorded no row count", qualified(layer, name)))
            })
    }

    /// Overwrites or appends `batches` (an empty overwrite writes an empty table with `schema`),
    /// recording `txn` when given: [`Lake::overwrite`] and [`Lake::append`] with the mode and
    /// the transaction chosen at run time.
    #[allow(clippy::too_many_arguments)]
    pub async fn save(
        &self,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        schema: datafusion::arrow::datatypes::SchemaRef,
        partitions: &[&str],
        mode: SaveMode,
        txn: Option<&Txn>,
    ) -> Result<DeltaTable> {
        let batches = if batches.is_empty() { vec![RecordBatch::new_empty(schema)] } else { batches };
        self.write(layer, name, batches, partitions, mode, txn).await
    }

    async fn write(
        &self,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        partitions: &[&str],
        mode: SaveMode,
        txn: Option<&Txn>,
    ) -> Result<DeltaTable> {
        self.write_input(layer, name, WriteInput::Batches(batches), partitions, mode, txn).await
    }

    /// Writes `input` to a table: the mode, the Parquet settings of its schema, partitions and
    /// `txn`, shared by batch and query writes.
    async fn write_input(
        &self,
        layer: Layer,
        name: &str,
        input: WriteInput,
        partitions: &[&str],
        mode: SaveMode,
        txn: Option<&Txn>,
    ) -> Result<DeltaTable> {
        let table = match self.open(layer, name).await? {
            Some(table) => table,
            // A table to create.
            None => DeltaTable::try_from_url(self.table_url(layer, name)?)
                .await
                .map_err(|e| Error::delta(qualified(layer, name), e))?,
        };
        // An append to an existing partitioned table groups its rows here (see
        // `partitioned`); anything else goes through delta-rs's write.
        let input = match input {
            WriteInput::Batches(batches) if mode == SaveMode::Append => {
                let eligible =
                    batches.first().and_then(|b| partitioned::eligible(&table, &b.schema(), partitions));
                match eligible {
                    Some(table_schema) => {
                        let first = batches[0].clone();
                        let properties = move |file_rows| {
                            writer_properties(&first.schema(), &unique_text(&first, file_rows))
                        };
                        let commit = txn.map(Txn::commit_properties).unwrap_or_default();
                        let qualified = qualified(layer, name);
                        let table = partitioned::append(
                            &qualified,
                            &table,
                            table_schema,
                            batches,
                            partitions,
                            properties,
                            commit,
                        )
                        .await?;
                        self.handles.keep(layer, name, &table);
                        return Ok(table);
                    }
                    None => WriteInput::Batches(batches),
                }
            }
            input => input,
        };
        let (write, properties) = match input {
            WriteInput::Batches(batches) => {
                let properties =
                    batches.first().map(|b| writer_properties(&b.schema(), &unique_text_of(&batches)));
                (table.write(batches), properties)
            }
            WriteInput::Plan(plan) => {
                let properties = Some(writer_properties(plan.schema().as_arrow(), &[]));
                (table.write(Vec::new()).with_input_plan(plan), properties)
            }
        };
        let mut write = write.with_save_mode(mode);
        if let Some(properties) = properties {
            write = write.with_writer_properties(properties);
        }
        if mode == SaveMode::Overwrite {
            write = write.with_schema_mode(deltalake::operations::write::SchemaMode::Overwrite);
        }
        if !partitions.is_empty() {
            write = write.with_partition_columns(partitions.iter().map(|p| p.to_string()));
        }
        if let Some(txn) = txn {
            write = write.with_commit_properties(txn.commit_properties());
        }
        let table = write.await.map_err(|e| Error::delta(qualified(layer, name), e))?;
        self.handles.keep(layer, name, &table);
        Ok(table)
    }

    /// Upserts `batches` into a table on `keys`: matching rows are updated (every column),
    /// others inserted. Returns (updated, inserted). The table must exist.
    pub async fn merge(
        &self,
        ctx: &SessionContext,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        keys: &[&str],
    ) -> Result<(u64, u64)> {
        self.merge_txn(ctx, layer, name, batches, keys, None).await
    }

    /// [`Lake::merge`] in a commit that records `txn` when given. Keys match null-safely (`IS NOT
    /// DISTINCT FROM`), so a NULL key value updates its row instead of adding another.
    ///
    /// An unpartitioned table (every table the lake upserts into) takes [`upsert::upsert`]: only
    /// the files holding an incoming key are rewritten, streamed, so memory does not grow with
    /// the table. A partitioned one takes delta-rs' MERGE.
    pub async fn merge_txn(
        &self,
        ctx: &SessionContext,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        keys: &[&str],
        txn: Option<&Txn>,
    ) -> Result<(u64, u64)> {
        use datafusion::prelude::col;
        let Some(schema) = batches.first().map(|b| b.schema()) else {
            return Ok((0, 0));
        };
        let table = self.open(layer, name).await?.ok_or_else(|| {
            Error::Internal(format!("merge into {} which does not exist", qualified(layer, name)))
        })?;
        let empty =
            table.get_file_uris().map_err(|e| Error::delta(qualified(layer, name), e))?.next().is_none();
        let partitions: Vec<String> = table
            .snapshot()
            .map_err(|e| Error::delta(qualified(layer, name), e))?
            .metadata()
            .partition_columns()
            .to_vec();
        if empty {
            // Nothing to match: an append is the same result, without reading anything.
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            let partitions: Vec<&str> = partitions.iter().map(String::as_str).collect();
            self.write(layer, name, batches, &partitions, SaveMode::Append, txn).await?;
            return Ok((0, rows));
        }
        if partitions.is_empty() {
            // A task of its own: the upserts of a gold step run together, and each encodes its
            // Parquet on the thread polling it, so on one task they would share one core.
            use tracing::Instrument;
            let (qualified_name, keys, txn) = (
                qualified(layer, name),
                keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                txn.cloned(),
            );
            let work = async move {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                upsert::upsert(&table, &qualified_name, batches, &keys, txn.as_ref()).await
            };
            let done = tokio::spawn(work.instrument(tracing::Span::current()))
                .await
                .map_err(|e| Error::Internal(format!("upsert into {}: {e}", qualified(layer, name))))??;
            tracing::debug!(
                table = %qualified(layer, name),
                updated = done.updated,
                inserted = done.inserted,
                files_rewritten = done.files_rewritten,
                rows_copied = done.rows_copied,
                scan_rewrite_commit_ms = ?done.millis,
                "Upserted."
            );
            return Ok((done.updated, done.inserted));
        }
        // MERGE is a write of this process: delta-rs plans it, always locally.
        let local;
        let ctx = if crate::cluster::of(ctx).is_some() {
            local = session();
            &local
        } else {
            ctx
        };
        let unique = unique_text_of(&batches);
        let source = ctx.read_batches(batches)?;
        let on = keys
            .iter()
            .map(|k| {
                datafusion::logical_expr::binary_expr(
                    col(format!("target.{k}")),
                    datafusion::logical_expr::Operator::IsNotDistinctFrom,
                    col(format!("source.{k}")),
                )
            })
            .reduce(|a, b| a.and(b))
            .ok_or_else(|| Error::Internal("merge without keys".into()))?;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let err = |e| Error::delta(qualified(layer, name), e);
        let mut merge = table.merge(source, on).with_writer_properties(writer_properties(&schema, &unique));
        if let Some(txn) = txn {
            merge = merge.with_commit_properties(txn.commit_properties());
        }
        let (_, metrics) = merge
            .with_source_alias("source")
            .with_target_alias("target")
            .when_matched_update(|mut u| {
                for c in columns.iter().filter(|c| !keys.contains(&c.as_str())) {
                    u = u.update(c.as_str(), col(format!("source.{c}")));
                }
                u
            })
            .map_err(err)?
            .when_not_matched_insert(|mut i| {
                for c in &columns {
                    i = i.set(c.as_str(), col(format!("source.{c}")));
                }
                i
            })
            .map_err(err)?
            .await
            .map_err(err)?;
        Ok((metrics.num_target_rows_updated as u64, metrics.num_target_rows_inserted as u64))
    }

    /// Appends the rows of `batches` whose `key` the table does not hold yet, keeping the first
    /// occurrence (in input order) of a key repeated within `batches`. Returns the rows written.
    ///
    /// This is how bronze dedups across files, replays and runs: the check runs against the
    /// committed table, so re-running over the same input writes nothing and leaves the table
    /// at the same version. Within the batch, dedup is a hash set over Arrow's row format of the
    /// key (light: DataFusion's `DISTINCT ON` keeps an ordered accumulator per column and group);
    /// against the table it is a DataFusion anti-join that hashes the incoming side, so memory
    /// follows the micro-batch, not the table.
    pub async fn append_new_rows(
        &self,
        ctx: &SessionContext,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        spec: &DedupSpec<'_>,
    ) -> Result<u64> {
        self.append_new_rows_txn(ctx, layer, name, batches, spec, None).await
    }

    /// [`Lake::append_new_rows`], recording `txn` in the commit when rows are written.
    pub async fn append_new_rows_txn(
        &self,
        ctx: &SessionContext,
        layer: Layer,
        name: &str,
        batches: Vec<RecordBatch>,
        spec: &DedupSpec<'_>,
        txn: Option<&Txn>,
    ) -> Result<u64> {
        let DedupSpec { key, partitions } = *spec;
        let batches = first_per_key(batches, key)?;
        let Some(schema) = batches.first().map(|b| b.schema()) else {
            return Ok(0);
        };
        let new_rows = match self.open(layer, name).await? {
            None => batches,
            Some(table) => {
                let incoming = format!("__incoming_{}_{}", layer.as_str(), name);
                let existing = format!("__existing_{}_{}", layer.as_str(), name);
                crate::cluster::register_delta(ctx, &existing, &table).await?;
                register_batches(ctx, &incoming, schema, batches)?;
                let on =
                    key.iter().map(|k| format!("e.\"{k}\" = i.\"{k}\"")).collect::<Vec<_>>().join(" AND ");
                let sql = format!(
                    "SELECT i.* FROM \"{incoming}\" i WHERE NOT EXISTS (SELECT 1 FROM \"{existing}\" e WHERE {on})"
                );
                let result = match ctx.sql(&sql).await {
                    Ok(df) => df.collect().await,
                    Err(e) => Err(e),
                };
                ctx.deregister_table(&incoming)?;
                ctx.deregister_table(&existing)?;
                result?
            }
        };
        let new_rows: Vec<RecordBatch> = new_rows.into_iter().filter(|b| b.num_rows() > 0).collect();
        let written: usize = new_rows.iter().map(|b| b.num_rows()).sum();
        if written > 0 {
            self.write(layer, name, new_rows, partitions, SaveMode::Append, txn).await?;
        }
        Ok(written as u64)
    }

    /// Every Delta table in the lake, as `(layer, name)`, sorted.
    pub async fn tables(&self) -> Result<Vec<(Layer, String)>> {
        let mut out = Vec::new();
        for layer in Layer::ALL {
            if !self.remote {
                let dir = self.dir.join(layer.as_str());
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io(&dir, e))?;
                    if entry.path().join("_delta_log").is_dir() {
                        out.push((layer, entry.file_name().to_string_lossy().into_owned()));
                    }
                }
                continue;
            }
            let listed = self
                .store()?
                .list_with_delimiter(Some(&deltalake::Path::from(layer.as_str())))
                .await
                .map_err(|e| self.object_error(layer.as_str(), e))?;
            for prefix in listed.common_prefixes {
                let Some(name) = prefix.filename().map(str::to_string) else { continue };
                if self.exists(layer, &name).await? {
                    out.push((layer, name));
                }
            }
        }
        out.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        Ok(out)
    }

    /// Registers one table in `ctx` as `<layer>_<name>` (replacing any registration of that name).
    pub async fn register(&self, ctx: &SessionContext, layer: Layer, name: &str) -> Result<bool> {
        self.register_as(ctx, layer, name, &format!("{}_{}", layer.as_str(), name)).await
    }

    /// Registers the current version of one table in `ctx` as `sql_name`; false when it does not
    /// exist.
    pub async fn register_as(
        &self,
        ctx: &SessionContext,
        layer: Layer,
        name: &str,
        sql_name: &str,
    ) -> Result<bool> {
        let Some(table) = self.open(layer, name).await? else { return Ok(false) };
        crate::cluster::register_delta(ctx, sql_name, &table).await?;
        Ok(true)
    }

    /// Registers every table of the lake in `ctx` as `<layer>_<name>`; returns the names.
    pub async fn register_all(&self, ctx: &SessionContext) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (layer, name) in self.tables().await? {
            if self.register(ctx, layer, &name).await? {
                names.push(format!("{}_{}", layer.as_str(), name));
            }
        }
        Ok(names)
    }
}

/// A micro-batch's identity, committed atomically with a write as a Delta application
/// transaction (`txn` action): a table records the last `version` of `app_id` it applied, which
/// makes a replayed micro-batch detectable after a crash. `metadata` goes into the commit info.
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    /// Application id, e.g. `cloudlake.stream.usage_events`.
    pub app_id: String,
    /// Micro-batch number, increasing.
    pub version: i64,
    /// Extra commit-info entries (the batch's source offsets, for auditing).
    pub metadata: Vec<(String, serde_json::Value)>,
    /// Further `(app_id, version)` records of the same commit: a full rebuild covers every
    /// stream's committed batches, so none of them is applied twice after it.
    pub covers: Vec<(String, i64)>,
}

impl Txn {
    /// Micro-batch `version` of application `app_id`.
    pub fn batch(app_id: &str, version: i64) -> Self {
        Txn { app_id: app_id.to_string(), version, metadata: vec![], covers: vec![] }
    }

    /// A commit recording every `(app_id, version)` of `apps`; `None` when there are none.
    pub fn covering(apps: Vec<(String, i64)>) -> Option<Self> {
        let mut apps = apps.into_iter();
        let (app_id, version) = apps.next()?;
        Some(Txn { app_id, version, metadata: vec![], covers: apps.collect() })
    }

    fn commit_properties(&self) -> deltalake::kernel::transaction::CommitProperties {
        let mut txns = vec![deltalake::kernel::Transaction::new(&self.app_id, self.version)];
        txns.extend(self.covers.iter().map(|(a, v)| deltalake::kernel::Transaction::new(a, *v)));
        deltalake::kernel::transaction::CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata(self.metadata.clone())
    }
}

/// How [`Lake::append_new_rows`] recognises rows it already holds.
#[derive(Debug, Clone, Copy)]
pub struct DedupSpec<'a> {
    /// Columns whose values identify a row (the natural key, maybe with the content hash).
    /// Within one batch the first row of a key, in input order (lineage: file, line), wins.
    pub key: &'a [&'a str],
    /// Partition columns, used when the table is created.
    pub partitions: &'a [&'a str],
}

/// Registers batches as an in-memory table `name` (replacing any table of that name); on a
/// cluster session, as a scratch Parquet file the executors read ([`crate::cluster`]).
pub fn register_batches(
    ctx: &SessionContext,
    name: &str,
    schema: datafusion::arrow::datatypes::SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    if let Some(cluster) = crate::cluster::of(ctx) {
        return crate::cluster::register_batches(ctx, &cluster, name, schema, &batches);
    }
    let _ = ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![batches])?))?;
    Ok(())
}

/// Collects a DataFrame with the schema its batches carry (the plan's when there are none).
pub async fn collect(
    df: datafusion::prelude::DataFrame,
) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    let planned = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok((batches.first().map_or(planned, |b| b.schema()), batches))
}

/// What a lake write takes its rows from.
enum WriteInput {
    Batches(Vec<RecordBatch>),
    /// A plan delta-rs runs, writing its rows as they come.
    Plan(datafusion::logical_expr::LogicalPlan),
}

/// `layer/name`, the way errors name a table.
pub fn qualified(layer: Layer, name: &str) -> String {
    format!("{}/{}", layer.as_str(), name)
}

/// Parquet settings of every file the lake writes: Snappy (delta-rs' default); a dictionary
/// only where values repeat (text codes, names, dates, flags); min/max statistics on numbers,
/// dates and times, and on text only for ids (`*_id`: keys, run ids). Numbers, timestamps and
/// per-row text (`event_id`, `extra_json`, a quarantined `record`) are nearly unique per row: a
/// dictionary hashes and compares each value to save nothing. So is text listed in `unique`
/// (see [`unique_text`]: ids of orgs and resources at scale). Statistics compare each value with
/// the page's bounds; the lake's reads prune on dates, run ids and keys, never on names, codes,
/// flags or file names. Profiled on a backfill: dictionaries and text statistics took a quarter
/// of its CPU; the text statistics left on other columns still took 2.6 % at scale 100.
pub fn writer_properties(
    schema: &datafusion::arrow::datatypes::Schema,
    unique: &[String],
) -> WriterProperties {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::properties::EnabledStatistics;
    use datafusion::parquet::schema::types::ColumnPath;
    const UNIQUE_TEXT: &[&str] = &["event_id", crate::landing::EXTRA_JSON, "record"];
    let mut builder = WriterProperties::builder()
        .set_created_by(format!("cloudlake {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false);
    for field in schema.fields() {
        let name = field.name().as_str();
        let path = || ColumnPath::from(name);
        let text = field.data_type().is_string();
        let unique = UNIQUE_TEXT.contains(&name) || unique.iter().any(|u| u == name);
        let repeats = match field.data_type() {
            _ if text => !unique,
            DataType::Date32 | DataType::Boolean => true,
            _ => FEW_VALUES.contains(&name),
        };
        if repeats {
            builder = builder.set_column_dictionary_enabled(path(), true);
        }
        // A hash is random bytes: Snappy spends its time there to save nothing.
        if name == crate::landing::RECORD_HASH {
            builder = builder.set_column_compression(path(), Compression::UNCOMPRESSED);
        }
        if unique || (text && !name.ends_with("_id")) {
            builder = builder.set_column_statistics_enabled(path(), EnabledStatistics::None);
        }
    }
    builder.build()
}

/// The text columns of `batch` whose values will barely repeat in a file of `file_rows` rows: at
/// least a quarter of them distinct, by an estimate from the first [`UNIQUE_SAMPLE`] rows (none
/// when the batch has fewer, where a dictionary costs little). A sample's distinct values `d` out
/// of `s` rows give the number of values `n` the column draws from (`d = n (1 - e^(-s/n))`, rows
/// drawn at random), and so the distinct values of a file. At scale 100 a micro-batch's file of
/// a date holds 3,600 events of 8,000 orgs and 40,000 resources: ids nearly unique, whose
/// dictionaries compressed nothing and took 7 % of the stream's CPU. A silver file holds a whole
/// date, 72,000 events over the same orgs (one in nine distinct): a dictionary cuts the three org
/// columns to a third, silver events from 360 to 287 MB, in the same time (release, alternating
/// runs). `resource_id` there (33,000 distinct) shrinks by a third too, but interning its values
/// added a second of CPU to the run, so a column a quarter distinct or more stays plain.
pub fn unique_text(batch: &RecordBatch, file_rows: usize) -> Vec<String> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::DataType;
    let rows = UNIQUE_SAMPLE;
    if batch.num_rows() < rows {
        return Vec::new();
    }
    let file_rows = file_rows.max(rows) as f64;
    let mut out = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_string() {
            continue;
        }
        let Ok(sample) = datafusion::arrow::compute::cast(&column.slice(0, rows), &DataType::Utf8) else {
            continue;
        };
        let present = rows - sample.null_count();
        if present == 0 {
            continue;
        }
        let values: foldhash::HashSet<&str> = sample.as_string::<i32>().iter().flatten().collect();
        let in_file = match values_drawn_from(values.len(), present) {
            Some(n) => n * -(-file_rows / n).exp_m1(),
            None => file_rows,
        };
        if in_file * 4.0 >= file_rows {
            out.push(field.name().clone());
        }
    }
    out
}

/// [`unique_text`] for a write of `batches` into one file (or a few): the first batch's sample,
/// all their rows.
pub fn unique_text_of(batches: &[RecordBatch]) -> Vec<String> {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    batches.first().map(|b| unique_text(b, rows)).unwrap_or_default()
}

/// How many values a column draws from when `rows` rows drawn at random hold `distinct` of them
/// (solving `distinct = n (1 - e^(-rows/n))` for `n`); `None` when all are distinct (no bound).
fn values_drawn_from(distinct: usize, rows: usize) -> Option<f64> {
    if distinct >= rows {
        return None;
    }
    let (d, s) = (distinct as f64, rows as f64);
    let expected = |n: f64| n * -(-s / n).exp_m1();
    // `expected` grows with n from 1 towards s: bisect between d and a bound above the answer.
    let (mut low, mut high) = (d.max(1.0), d.max(1.0));
    while expected(high) < d {
        high *= 2.0;
        if high > 1e15 {
            return None;
        }
    }
    for _ in 0..60 {
        let mid = (low + high) / 2.0;
        if expected(mid) < d { low = mid } else { high = mid }
    }
    Some(high)
}

/// Numbers and times that hold a handful of values in a file: a run's ingest time, a schema
/// version. Plain, each takes 8 bytes a row for Snappy to squeeze (34 MB each in silver
/// events at scale 100); with a dictionary, a bit or two.
const FEW_VALUES: &[&str] = &[crate::landing::INGEST_TS, "schema_version"];

/// Rows [`unique_text`] looks at.
pub const UNIQUE_SAMPLE: usize = 4096;

/// The DataFusion session every stage uses (see [`tune`]), with the conformance functions
/// ([`crate::silver::conform::udfs`]).
pub fn session() -> SessionContext {
    let ctx = SessionContext::new_with_config(tune(SessionConfig::new()));
    crate::silver::conform::register(&ctx);
    ctx
}

/// The settings every session of the pipeline shares, local or on a cluster:
/// - one partition per core;
/// - a join whose smaller side holds under [`JOIN_BROADCAST_BYTES`] (and DataFusion's row limit)
///   builds its hash table once from that side and streams the other side as it comes, rather
///   than hash-repartitioning both: the masters a chunk of events joins (40 k resources at
///   scale 100, 2.7 MB) are above DataFusion's 1 MB default, and repartitioning the events moved
///   every one of their 30 columns.
pub fn tune(config: SessionConfig) -> SessionConfig {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mut config = config.with_target_partitions(threads);
    config.options_mut().optimizer.hash_join_single_partition_threshold = JOIN_BROADCAST_BYTES;
    config
}

/// Size under which a join's smaller side is built once rather than repartitioned ([`tune`]).
pub const JOIN_BROADCAST_BYTES: usize = 64 << 20;

/// Keeps the first row of each `key` value, in input order.
pub fn first_per_key(batches: Vec<RecordBatch>, key: &[&str]) -> Result<Vec<RecordBatch>> {
    use datafusion::arrow::array::BooleanArray;
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::arrow::row::{RowConverter, SortField};
    let Some(first) = batches.first() else { return Ok(batches) };
    let schema = first.schema();
    let indices: Vec<usize> = key
        .iter()
        .map(|k| schema.index_of(k).map_err(|_| Error::Internal(format!("dedup key {k} is not a column"))))
        .collect::<Result<_>>()?;
    let converter = RowConverter::new(
        indices.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect(),
    )?;
    let rows = batches
        .iter()
        .map(|b| converter.convert_columns(&indices.iter().map(|i| b.column(*i).clone()).collect::<Vec<_>>()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // The keys borrow the converted rows: no allocation per row.
    let mut seen: foldhash::HashSet<&[u8]> =
        foldhash::HashSetExt::with_capacity(rows.iter().map(|r| r.num_rows()).sum());
    let mut out = Vec::with_capacity(batches.len());
    for (batch, rows) in batches.iter().zip(&rows) {
        let keep: BooleanArray = rows.iter().map(|r| Some(seen.insert(r.data()))).collect();
        out.push(if keep.true_count() == batch.num_rows() {
            batch.clone()
        } else {
            filter_record_batch(batch, &keep)?
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lake_is_a_folder_a_file_url_or_an_s3_url() {
        let local = Lake::new("/data/lake").unwrap();
        assert!(!local.is_remote());
        assert_eq!(local.location(), "/data/lake");
        assert_eq!(local.state_dir(), Path::new("/data/lake"));
        assert_eq!(Lake::new("file:///data/lake").unwrap().location(), "/data/lake");

        let remote = Lake::new("s3://bucket/some/lake").unwrap();
        assert!(remote.is_remote());
        assert_eq!(remote.location(), "s3://bucket/some/lake/");
        assert_eq!(remote.table_location(Layer::Gold, "org_health"), "s3://bucket/some/lake/gold/org_health");
        assert_eq!(
            remote.table_url(Layer::Bronze, "usage_events").unwrap().as_str(),
            "s3://bucket/some/lake/bronze/usage_events/"
        );
        // Checkpoints and the lock of a lake in object storage stay on the local disk.
        assert!(remote.state_dir().ends_with("s3/bucket/some/lake"), "{}", remote.state_dir().display());
    }

    #[test]
    fn an_unsupported_scheme_is_one_clear_sentence() {
        let e = Lake::new("gs://bucket/lake").unwrap_err().to_string();
        assert!(e.contains("gs:// scheme is not supported"), "{e}");
        let e = Lake::new("s3://bad host/lake").unwrap_err().to_string();
        assert!(e.contains("not a valid URL"), "{e}");
    }

    #[tokio::test]
    async fn a_kept_handle_follows_commits_made_through_another_lake() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let rows =
            |n: i64| RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![n]))]).unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        assert!(lake.open(Layer::Silver, "t").await.unwrap().is_none());
        lake.append(Layer::Silver, "t", vec![rows(1)], &[]).await.unwrap();
        // The lake keeps the handle it wrote with; clones share it, another Lake does not.
        assert_eq!(lake.handles.get(Layer::Silver, "t").and_then(|t| t.version()), Some(0));
        let clone = lake.clone();
        assert_eq!(clone.open(Layer::Silver, "t").await.unwrap().unwrap().version(), Some(0));
        let other = Lake::new(dir.path()).unwrap();
        other.append(Layer::Silver, "t", vec![rows(2)], &[]).await.unwrap();
        other.append(Layer::Silver, "t", vec![rows(3)], &[]).await.unwrap();
        let table = lake.open(Layer::Silver, "t").await.unwrap().unwrap();
        assert_eq!(table.version(), Some(2));
        assert_eq!(table.get_file_uris().unwrap().count(), 3);
        // A write through the lake starts from the kept handle, brought up to date first.
        lake.overwrite(Layer::Silver, "t", vec![rows(4)], schema.clone(), &[]).await.unwrap();
        let ctx = session();
        lake.register(&ctx, Layer::Silver, "t").await.unwrap();
        let got = ctx.sql("SELECT n FROM silver_t").await.unwrap().collect().await.unwrap();
        assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        assert_eq!(other.open(Layer::Silver, "t").await.unwrap().unwrap().version(), Some(3));
    }

    #[test]
    fn first_per_key_keeps_the_first_row_of_each_key_across_batches() {
        use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |ids: Vec<Option<&str>>, n: Vec<i64>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(ids)), Arc::new(Int64Array::from(n))],
            )
            .unwrap()
        };
        let out = first_per_key(
            vec![
                batch(vec![Some("a"), Some("b"), Some("a"), None], vec![1, 2, 3, 4]),
                batch(vec![Some("b"), None, Some("c")], vec![5, 6, 7]),
            ],
            &["id"],
        )
        .unwrap();
        let kept: Vec<i64> =
            out.iter().flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(kept, vec![1, 2, 4, 7], "one null key is kept, like one value");
    }

    #[test]
    fn text_that_barely_repeats_is_written_without_a_dictionary() {
        use datafusion::arrow::array::StringArray;
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::parquet::file::properties::EnabledStatistics;
        use datafusion::parquet::schema::types::ColumnPath;
        let rows = UNIQUE_SAMPLE + 10;
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("org_id", DataType::Utf8, false),
            Field::new("service", DataType::Utf8, false),
        ]));
        // Orgs drawn at random from 8,000, as events draw them.
        let mut seed = 42u64;
        let mut draw = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let orgs: Vec<String> = (0..rows).map(|_| format!("org_{}", draw(8000))).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from((0..rows).map(|i| format!("evt_{i}")).collect::<Vec<_>>())),
                Arc::new(StringArray::from(orgs)),
                Arc::new(StringArray::from((0..rows).map(|i| format!("svc_{}", i % 12)).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        // A micro-batch's file of a date at scale 100 (3,600 rows): orgs nearly unique there.
        let unique = unique_text(&batch, 3_600);
        assert_eq!(unique, vec!["event_id".to_string(), "org_id".to_string()]);
        // A silver file of a whole date (72,000 rows): each org ~9 times, a dictionary pays.
        assert_eq!(unique_text(&batch, 72_000), vec!["event_id".to_string()]);
        let p = writer_properties(&schema, &unique);
        assert!(!p.dictionary_enabled(&ColumnPath::from("org_id")));
        assert!(p.dictionary_enabled(&ColumnPath::from("service")));
        // Text statistics only where reads prune: ids that repeat.
        assert_eq!(p.statistics_enabled(&ColumnPath::from("org_id")), EnabledStatistics::None);
        assert_eq!(p.statistics_enabled(&ColumnPath::from("service")), EnabledStatistics::None);
        let p = writer_properties(&schema, &[]);
        assert_eq!(p.statistics_enabled(&ColumnPath::from("org_id")), EnabledStatistics::Page);
        // A small batch keeps the defaults: a dictionary there costs little.
        assert!(unique_text(&batch.slice(0, 100), 1_000_000).is_empty());
    }

    #[test]
    fn the_values_a_column_draws_from_are_estimated_from_a_sample() {
        // 8,000 orgs and 4,096 rows: about 3,206 distinct expected.
        let n = values_drawn_from(3_206, 4_096).unwrap();
        assert!((7_900.0..8_100.0).contains(&n), "{n}");
        assert_eq!(values_drawn_from(4_096, 4_096), None, "all distinct: no bound");
        let few = values_drawn_from(12, 4_096).unwrap();
        assert!((12.0..12.5).contains(&few), "{few}");
    }
}
