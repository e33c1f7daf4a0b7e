//! `cloudlake sql`: ad-hoc SQL over every lake table (SPEC section 2).
//!
//! Tables are registered as `<layer>_<name>`: `bronze_usage_events`, `quarantine_users`,
//! `silver_...`, `gold_...`. Results print as a table, JSON (an array of objects) or CSV.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::lake::{self, Lake};
use crate::{Error, Result};

/// How query results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// A bordered text table.
    #[default]
    Table,
    /// A JSON array of objects.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Runs `sql` against every table of the lake.
pub async fn query(lake: &Lake, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = lake::session();
    let names = lake.register_all(&ctx).await?;
    // Read-only: the lake's tables change only through the pipeline's own commits.
    let options =
        datafusion::execution::context::SQLOptions::new().with_allow_ddl(false).with_allow_dml(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(|e| {
        let msg = e.to_string();
        if msg.contains("not found") {
            let available = if names.is_empty() {
                "none yet; run `cloudlake run` first".to_string()
            } else {
                names.join(", ")
            };
            Error::Usage(format!("{msg}. Tables: {available}"))
        } else {
            Error::DataFusion(e)
        }
    })?;
    Ok(df.collect().await?)
}

/// Writes batches in `format`.
pub fn write_batches(batches: &[RecordBatch], format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    let io = |e: std::io::Error| Error::io("<stdout>", e);
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", pretty_format_batches(batches)?).map_err(io)?;
        }
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            writeln!(out).map_err(io)?;
        }
        OutputFormat::Csv => {
            let mut w = datafusion::arrow::csv::Writer::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
        }
    }
    out.flush().map_err(io)
}
