//! `cloudlake quality`.

use clap::Args;
use cloudlake::lake::Lake;
use cloudlake::quality;

use super::GlobalArgs;

/// Options of `cloudlake quality`.
#[derive(Debug, Args)]
pub struct QualityArgs {
    /// Example records shown per rule that fired
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// List every rule, also those with no violation
    #[arg(long)]
    all: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &GlobalArgs, args: &QualityArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let report = quality::report(&Lake::new(&settings.lake)?, args.examples).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render(args.all));
    }
    Ok(())
}
