//! `cloudlake publish`: the gold marts into Cassandra.

use clap::Args;
use cloudlake::lake::Lake;
use cloudlake::serving::cassandra::{Cassandra, publish};

use super::GlobalArgs;

/// Options of `cloudlake publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Print what was published as JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &GlobalArgs, args: &PublishArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let Some(config) = &settings.cassandra else {
        anyhow::bail!(
            "no Cassandra configured: pass --cassandra HOST:PORT or add a [cassandra] table to the config file"
        );
    };
    let lake = Lake::new(&settings.lake)?;
    let cassandra = Cassandra::connect(config).await?;
    let report = publish::publish(&lake, &cassandra).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(["table", "rows", "written (new or changed)", "rows deleted", "partitions deleted"]);
    for p in &report.tables {
        t.add_row(vec![
            p.table.clone(),
            p.rows.to_string(),
            p.written.to_string(),
            p.deleted.to_string(),
            p.deleted_partitions.to_string(),
        ]);
    }
    for i in 1..5 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    println!("{t}");
    println!(
        "published {} rows ({} written, {} deleted) to keyspace {} at {} in {:.2} s",
        report.rows(),
        report.written(),
        report.deleted(),
        cassandra.keyspace(),
        config.nodes(),
        report.seconds
    );
    Ok(())
}
