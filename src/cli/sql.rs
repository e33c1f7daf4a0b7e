//! `cloudlake sql "SELECT ..."`.

use clap::Args;
use cloudlake::lake::Lake;
use cloudlake::sql::{self, OutputFormat};

use super::GlobalArgs;

/// Options of `cloudlake sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL statement (DataFusion dialect), e.g. "SELECT count(*) FROM bronze_usage_events"
    pub query: String,
    /// Output format
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

pub async fn run(global: &GlobalArgs, args: &SqlArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let lake = Lake::new(&settings.lake)?;
    let batches = sql::query(&lake, &args.query).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    sql::write_batches(&batches, args.format, &mut out)?;
    Ok(())
}
