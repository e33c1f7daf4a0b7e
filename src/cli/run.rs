//! `cloudlake run`.

use clap::Args;
use cloudlake::{pipeline, telemetry::Progress};

use super::GlobalArgs;

/// Options of `cloudlake run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print the run report as JSON instead of the summary table
    #[arg(long)]
    json: bool,
    /// Rebuild every gold mart even if only new events arrived (after changing anomaly thresholds)
    #[arg(long)]
    full: bool,
}

pub async fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<()> {
    let mut settings = global.settings()?;
    settings.full_refresh = args.full;
    let progress = Progress::new(pipeline::steps(), !global.quiet);
    let report = pipeline::run(&settings, &progress).await;
    progress.finish();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.summary());
        println!("report: {}", settings.lake.join("_runs").join(format!("{}.json", report.run_id)).display());
    }
    Ok(())
}
