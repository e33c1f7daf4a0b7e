//! `cloudlake generate --scale N --out DIR [--seed S]`.

use std::path::PathBuf;

use clap::Args;

/// Options of `cloudlake generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Multiple of the bundled dataset (43,200 events per unit, masters in proportion)
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Landing folder to write (CSV masters and usage_events_stream/)
    #[arg(long)]
    out: PathBuf,
    /// Random seed: the same seed and scale give the same bytes
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Days the events span from 2025-07-03: more days give more events for the same orgs
    #[arg(long, default_value_t = cloudlake::generate::DAYS)]
    days: u32,
    /// Event files in time order, as a live feed (a few events late), not each over the period
    #[arg(long)]
    in_order: bool,
}

pub async fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let (scale, out, seed) = (args.scale, args.out.clone(), args.seed);
    let period = cloudlake::generate::Period { days: args.days, in_order: args.in_order };
    let r =
        tokio::task::spawn_blocking(move || cloudlake::generate::generate_over(scale, &out, seed, period))
            .await??;
    let mb = r.event_bytes as f64 / 1_048_576.0;
    println!(
        "generated scale {} (seed {}, {} days{}) in {}: {} orgs, {} events in {} files, {:.1} MB of JSONL in {:.2} s ({:.0} MB/s); total {:.2} s",
        r.scale,
        r.seed,
        r.days,
        if r.in_order { ", in time order" } else { "" },
        r.out.display(),
        r.orgs,
        r.events,
        cloudlake::generate::EVENT_FILES,
        mb,
        r.event_seconds,
        mb / r.event_seconds.max(1e-9),
        r.seconds
    );
    Ok(())
}
