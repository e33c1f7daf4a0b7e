//! `cloudlake query NAME [--org ID] [--from DATE] [--to DATE] [--top N] [--format F]`.

use chrono::NaiveDate;
use clap::Args;
use cloudlake::lake::Lake;
use cloudlake::serving::cassandra::Cassandra;
use cloudlake::serving::queries::parse_date;
use cloudlake::serving::{QueryName, QueryParams, lake};
use cloudlake::sql::{OutputFormat, write_batches};

use super::GlobalArgs;

/// Options of `cloudlake query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Which query
    #[arg(value_enum)]
    pub name: QueryName,
    /// Organisation id (required by daily-usage and top-services)
    #[arg(long)]
    pub org: Option<String>,
    /// Service (daily-usage)
    #[arg(long)]
    pub service: Option<String>,
    /// First date, YYYY-MM-DD
    #[arg(long, value_parser = parse_date)]
    pub from: Option<NaiveDate>,
    /// Last date, YYYY-MM-DD; "last N days" end here [default: latest date in the data]
    #[arg(long, value_parser = parse_date)]
    pub to: Option<NaiveDate>,
    /// Rows of top-services
    #[arg(long)]
    pub top: Option<usize>,
    /// Output format
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Where to answer from: Cassandra when configured, else the lake (auto)
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
}

/// The serving backend of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Cassandra when configured, else the lake
    Auto,
    /// The gold marts in the lake
    Lake,
    /// Cassandra (needs --cassandra or [cassandra] in the config file)
    Cassandra,
}

pub async fn run(global: &GlobalArgs, args: &QueryArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let params = QueryParams {
        org: args.org.clone(),
        service: args.service.clone(),
        from: args.from,
        to: args.to,
        top: args.top,
    };
    params.validate(args.name)?;
    let cassandra = match (args.backend, &settings.cassandra) {
        (Backend::Lake, _) | (Backend::Auto, None) => None,
        (_, Some(c)) => Some(c),
        (Backend::Cassandra, None) => {
            anyhow::bail!(
                "--backend cassandra needs --cassandra HOST:PORT or a [cassandra] table in the config file"
            )
        }
    };
    let batches = match cassandra {
        Some(config) => {
            let c = Cassandra::connect(config).await?;
            cloudlake::serving::cassandra::query::query(&c, args.name, &params).await?
        }
        None => lake::query(&Lake::new(&settings.lake)?, args.name, &params).await?,
    };
    let stdout = std::io::stdout();
    write_batches(&batches, args.format, &mut stdout.lock())?;
    Ok(())
}
