//! `cloudlake maintain`.

use clap::Args;
use cloudlake::lake::{Lake, maintain};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::GlobalArgs;

/// Options of `cloudlake maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Keep files that versions younger than this many hours still need (0 keeps only the latest)
    #[arg(long, default_value_t = 168)]
    retain_hours: u64,
}

pub async fn run(global: &GlobalArgs, args: &MaintainArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let metrics = maintain::maintain(&Lake::new(&settings.lake)?, args.retain_hours).await?;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["table", "files compacted", "files written", "files vacuumed"]);
    for m in &metrics {
        t.add_row(vec![
            m.table.clone(),
            m.files_removed.to_string(),
            m.files_added.to_string(),
            m.files_vacuumed.to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}
