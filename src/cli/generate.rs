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
}

pub async fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let (scale, out, seed) = (args.scale, args.out.clone(), args.seed);
    let r = tokio::task::spawn_blocking(move || cloudlake::generate::generate(scale, &out, seed)).await??;
    let mb = r.event_bytes as f64 / 1_048_576.0;
    println!(
        "generated scale {} (seed {}) in {}: {} orgs, {} events in {} files, {:.1} MB of JSONL in {:.2} s ({:.0} MB/s); total {:.2} s",
        r.scale,
        r.seed,
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
