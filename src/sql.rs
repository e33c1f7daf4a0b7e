//! `cloudlake sql`: ad-hoc SQL over every lake table (SPEC section 2).
//!
//! Tables are registered as `<layer>_<name>`: `bronze_usage_events`, `quarantine_users`,
//! `silver_...`, `gold_...`. Results print as a table, JSON (an array of objects) or CSV.

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::lake::{self, Lake, Layer};
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

/// Runs `sql` against the lake's tables (`bronze_*`, `silver_*`, `gold_*`, `quarantine_*`).
///
/// Only the tables the statement names are opened: each is a Delta log to read, which in object
/// storage means several requests.
pub async fn query(lake: &Lake, sql: &str) -> Result<Vec<RecordBatch>> {
    let ctx = lake::session();
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    // A statement that does not parse fails here, with DataFusion's message.
    let statement = state.sql_to_statement(sql, &dialect)?;
    for reference in state.resolve_table_references(&statement)? {
        if let Some((layer, name)) = lake_table(reference.table()) {
            lake.register(&ctx, layer, name).await?;
        }
    }
    // Read-only: the lake's tables change only through the pipeline's own commits.
    let options =
        datafusion::execution::context::SQLOptions::new().with_allow_ddl(false).with_allow_dml(false);
    let df = match ctx.sql_with_options(sql, options).await {
        Ok(df) => df,
        Err(e) if e.to_string().contains("not found") => {
            let names: Vec<String> = lake
                .tables()
                .await?
                .into_iter()
                .map(|(layer, name)| format!("{}_{name}", layer.as_str()))
                .collect();
            let available = if names.is_empty() {
                "none yet; run `cloudlake run` first".to_string()
            } else {
                names.join(", ")
            };
            return Err(Error::Usage(format!("{e}. Tables: {available}")));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(df.collect().await?)
}

/// The lake table an SQL name refers to: `gold_org_health` is (gold, org_health).
fn lake_table(sql_name: &str) -> Option<(Layer, &str)> {
    let (prefix, name) = sql_name.split_once('_')?;
    let layer = Layer::ALL.into_iter().find(|l| l.as_str() == prefix)?;
    (!name.is_empty()).then_some((layer, name))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names_map_to_lake_tables() {
        assert_eq!(lake_table("gold_org_health"), Some((Layer::Gold, "org_health")));
        assert_eq!(lake_table("quarantine_usage_events"), Some((Layer::Quarantine, "usage_events")));
        assert_eq!(lake_table("silver_"), None);
        assert_eq!(lake_table("platinum_x"), None);
        assert_eq!(lake_table("orgs"), None);
    }
}
