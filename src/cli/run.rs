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
    /// Run silver and gold on a DataFusion Ballista cluster: its scheduler's URL. The events
    /// land in bronze first, then silver and gold are rebuilt there in full. The executors
    /// must see the lake's folder at the same path (see `cloudlake scheduler` and `executor`)
    #[arg(long, env = "CLOUDLAKE_BALLISTA", value_name = "df://HOST:PORT")]
    ballista: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<()> {
    let mut settings = global.settings()?;
    settings.full_refresh = args.full;
    settings.ballista = args.ballista.clone();
    let progress = Progress::new(pipeline::steps(&settings), !global.quiet);
    let report = pipeline::run(&settings, &progress).await;
    progress.finish();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.summary());
        println!("report: {}", settings.lake.join("_runs").join(format!("{}.json", report.run_id)).display());
        print_sample_answers(&settings).await?;
    }
    Ok(())
}

/// A short answer to each dashboard query, for the org with the highest 30-day cost.
async fn print_sample_answers(settings: &cloudlake::config::Settings) -> anyhow::Result<()> {
    use cloudlake::lake::Lake;
    use cloudlake::serving::{QueryName, QueryParams, lake};
    let lake_ = Lake::new(&settings.lake)?;
    let Some(org) = lake::busiest_org(&lake_).await? else { return Ok(()) };
    println!(
        "\nDashboard queries (org {org}, the highest 30-day cost; `cloudlake query NAME --help` for more):"
    );
    // The queries run together (each opens its own marts), and print in order.
    let params = QueryParams { org: Some(org.clone()), top: Some(3), ..Default::default() };
    let answers =
        futures::future::try_join_all(QueryName::ALL.map(|name| lake::query(&lake_, name, &params))).await?;
    for (name, batches) in QueryName::ALL.into_iter().zip(answers) {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        // The latest three rows: most queries are ordered by date.
        println!("\n{} ({} rows{})", name.as_str(), rows, if rows > 3 { ", latest 3" } else { "" });
        let Some(first) = batches.first() else { continue };
        let tail = if name == QueryName::TopServices {
            batches
        } else {
            let all = datafusion::arrow::compute::concat_batches(&first.schema(), &batches)?;
            vec![all.slice(all.num_rows().saturating_sub(3), all.num_rows().min(3))]
        };
        println!("{}", datafusion::arrow::util::pretty::pretty_format_batches(&tail)?);
    }
    Ok(())
}
