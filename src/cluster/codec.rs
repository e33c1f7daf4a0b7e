//! The logical plan codec client and scheduler share: Ballista's, plus [`FilesTable`].
//!
//! A custom table travels in a plan as bytes the codec writes; ours are a tag and the JSON of
//! the file list (the schema travels beside them). Every other node is Ballista's business.

use std::sync::Arc;

use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use super::table::{Files, FilesTable};

/// Marks a table encoded by this codec (Ballista's encodings never start with it).
const FILES_TAG: &[u8] = b"cloudlake.files.v1:";

/// Ballista's logical codec that also carries [`FilesTable`]s.
#[derive(Debug, Default)]
pub struct Codec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for Codec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.strip_prefix(FILES_TAG) {
            Some(json) => {
                let files: Files = serde_json::from_slice(json).map_err(|e| {
                    DataFusionError::Internal(format!("table {table_ref}: bad file list: {e}"))
                })?;
                let table =
                    FilesTable::new(schema, files).map_err(|e| DataFusionError::External(Box::new(e)))?;
                Ok(Arc::new(table))
            }
            None => self.inner.try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match node.downcast_ref::<FilesTable>() {
            Some(table) => {
                buf.extend_from_slice(FILES_TAG);
                serde_json::to_writer(&mut *buf, table.files())
                    .map_err(|e| DataFusionError::Plan(format!("table {table_ref}: {e}")))?;
                Ok(())
            }
            None => Err(DataFusionError::NotImplemented(format!(
                "table {table_ref} cannot run on a Ballista cluster (only lake tables and batches a stage registered can)"
            ))),
        }
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    /// The conformance functions by name (a scheduler's registry lacks them), others as Ballista
    /// decodes them.
    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match crate::silver::conform::udf_named(name) {
            Some(udf) => Ok(udf),
            None => self.inner.try_decode_udf(name, buf),
        }
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::table::DataFile;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn a_file_list_round_trips_and_other_tables_are_refused_by_name() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("d", DataType::Date32, true),
        ]));
        let files = Files {
            store: "file://".into(),
            partition_cols: vec!["d".into()],
            files: vec![DataFile {
                path: "lake/t/d=2024-01-02/part-0.parquet".into(),
                size: 10,
                partition_values: vec![Some("2024-01-02".into())],
            }],
        };
        let table = Arc::new(FilesTable::new(schema.clone(), files.clone()).unwrap());
        let codec = Codec::default();
        let mut buf = vec![];
        codec.try_encode_table_provider(&"t".into(), table, &mut buf).unwrap();
        let ctx = TaskContext::default();
        let back = codec.try_decode_table_provider(&buf, &"t".into(), schema.clone(), &ctx).unwrap();
        let back = back.downcast_ref::<FilesTable>().unwrap();
        assert_eq!(back.files(), &files);

        let mem = Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![]]).unwrap());
        let e = codec.try_encode_table_provider(&"m".into(), mem, &mut vec![]).unwrap_err().to_string();
        assert!(e.contains("table m cannot run on a Ballista cluster"), "{e}");
    }
}
