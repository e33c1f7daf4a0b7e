//! [`FilesTable`]: a table as the Parquet files of one Delta snapshot, which a Ballista
//! scheduler can receive in a plan and its executors can scan.
//!
//! delta-rs' own provider plans a `DeltaScanExec` that Ballista cannot ship to executors, and a
//! Parquet listing of the table's folder would also read files the log has removed. So the
//! client resolves the snapshot (the active files, their sizes and partition values) and sends
//! that list; the scan is DataFusion's plain Parquet scan, with the partition values set per
//! file, which every Ballista node knows how to serialize.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use object_store::ObjectMeta;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One data file: where it is, its size, and its partition values (as the Delta log has them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path inside the object store (no leading slash).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Values of the partition columns, in [`Files::partition_cols`] order; `None` is null.
    pub partition_values: Vec<Option<String>>,
}

/// What [`FilesTable`] needs besides its schema: serialized as JSON in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Files {
    /// The object store, e.g. `file://` or `s3://bucket`.
    pub store: String,
    /// Partition columns, in the table's declared order.
    pub partition_cols: Vec<String>,
    /// The active files.
    pub files: Vec<DataFile>,
}

/// A table read from a fixed list of Parquet files.
#[derive(Debug)]
pub struct FilesTable {
    schema: SchemaRef,
    files: Files,
}

impl FilesTable {
    /// A table with `schema` (partition columns included, anywhere) over `files`.
    pub fn new(schema: SchemaRef, files: Files) -> Result<Self> {
        for c in &files.partition_cols {
            if schema.index_of(c).is_err() {
                return Err(Error::Internal(format!("partition column {c} is not in the table's schema")));
            }
        }
        for f in &files.files {
            if f.partition_values.len() != files.partition_cols.len() {
                return Err(Error::Internal(format!(
                    "file {} has {} partition values for {} partition columns",
                    f.path,
                    f.partition_values.len(),
                    files.partition_cols.len()
                )));
            }
            ObjectPath::parse(&f.path).map_err(|e| Error::Internal(format!("file path {}: {e}", f.path)))?;
        }
        ObjectStoreUrl::parse(&files.store)?;
        Ok(FilesTable { schema, files })
    }

    /// The current snapshot of a Delta table, with the schema its DataFusion provider has.
    pub async fn from_delta(table: &DeltaTable, name: &str) -> Result<Self> {
        let err = |e| Error::delta(name.to_string(), e);
        let schema = table.table_provider().await?.schema();
        let snapshot = table.snapshot().map_err(err)?;
        let partition_cols = snapshot.metadata().partition_columns().to_vec();
        let root = table.table_url().clone();
        let store = format!("{}://{}", root.scheme(), root.host_str().unwrap_or(""));
        // The URL's path is percent-encoded; an object store path has its own encoding.
        let prefix = ObjectPath::from_url_path(root.path())
            .map_err(|e| Error::Internal(format!("table {name} at {root}: {e}")))?
            .to_string();
        let files = snapshot
            .log_data()
            .into_iter()
            .map(|f| {
                let values = f.partition_values_map();
                let relative = f.object_store_path();
                DataFile {
                    path: if prefix.is_empty() {
                        relative.to_string()
                    } else {
                        format!("{prefix}/{relative}")
                    },
                    size: f.size().max(0) as u64,
                    partition_values: partition_cols
                        .iter()
                        .map(|c| values.get(c).cloned().flatten())
                        .collect(),
                }
            })
            .collect();
        FilesTable::new(schema, Files { store, partition_cols, files })
    }

    /// The file list (what a plan carries).
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// Data columns (as stored in the files) and partition columns, split.
    fn split_schema(&self) -> (SchemaRef, Vec<FieldRef>) {
        let is_part = |f: &Field| self.files.partition_cols.iter().any(|c| c == f.name());
        let data: Vec<FieldRef> = self.schema.fields().iter().filter(|f| !is_part(f)).cloned().collect();
        let parts: Vec<FieldRef> = self
            .files
            .partition_cols
            .iter()
            .filter_map(|c| self.schema.field_with_name(c).ok().map(|f| Arc::new(f.clone())))
            .collect();
        (Arc::new(Schema::new(data)), parts)
    }
}

#[async_trait]
impl TableProvider for FilesTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // The scan's output is the data columns then the partition columns; map the table's
        // column order (and the requested projection) onto it.
        let (data, parts) = self.split_schema();
        let combined: Vec<&str> = data
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .chain(parts.iter().map(|f| f.name().as_str()))
            .collect();
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let indices = wanted
            .iter()
            .map(|i| {
                let name = self.schema.field(*i).name();
                combined.iter().position(|c| c == name).ok_or_else(|| {
                    DataFusionError::Plan(format!("column {name} is neither stored nor a partition"))
                })
            })
            .collect::<DfResult<Vec<usize>>>()?;
        if self.files.files.is_empty() {
            let projected = Arc::new(self.schema.project(&wanted)?);
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let mut files = Vec::with_capacity(self.files.files.len());
        for f in &self.files.files {
            let values = parts
                .iter()
                .zip(&f.partition_values)
                .map(|(field, v)| match v {
                    Some(text) => ScalarValue::try_from_string(text.clone(), field.data_type()),
                    None => ScalarValue::try_from(field.data_type()),
                })
                .collect::<DfResult<Vec<_>>>()?;
            let location = ObjectPath::parse(&f.path).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let meta = ObjectMeta {
                location,
                last_modified: chrono::DateTime::UNIX_EPOCH,
                size: f.size,
                e_tag: None,
                version: None,
            };
            files.push(PartitionedFile::new_from_meta(meta).with_partition_values(values));
        }
        // Spread the files over the session's partitions, largest first onto the lightest group.
        let groups_n = state.config().target_partitions().max(1).min(files.len());
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); groups_n];
        for f in files {
            let lightest = groups.iter_mut().min_by_key(|g| g.0).expect("at least one group");
            lightest.0 += f.object_meta.size;
            lightest.1.push(f);
        }
        let source =
            Arc::new(ParquetSource::new(TableSchema::builder(data).with_table_partition_cols(parts).build()));
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(&self.files.store)?, source)
            .with_file_groups(groups.into_iter().map(|g| FileGroup::new(g.1)).collect())
            .with_projection_indices(Some(indices))?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
