//! `cloudlake stream` (follow event files or a Kafka topic) and `cloudlake produce` (replay
//! landing event files into a Kafka topic).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use cloudlake::stream::{self, StreamOptions, StreamSource, parse_duration};

use super::GlobalArgs;

/// Options of `cloudlake stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Read a Kafka topic at these brokers (HOST:PORT,...) instead of the landing event folder
    #[arg(long, value_name = "BROKERS", requires = "topic")]
    kafka: Option<String>,
    /// The Kafka topic (with --kafka)
    #[arg(long, value_name = "TOPIC", requires = "kafka")]
    topic: Option<String>,
    /// Process what is available now, then exit
    #[arg(long)]
    once: bool,
    /// Time between micro-batches, e.g. 500ms or 2s [default: [stream] trigger, 500ms]
    #[arg(long, value_name = "DURATION")]
    trigger: Option<String>,
    /// How late an event may be and still count as on time, e.g. 6h or 1d [default: [stream] allowed_lateness, 1d]
    #[arg(long, value_name = "DURATION")]
    allowed_lateness: Option<String>,
    /// Print the final report as JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &GlobalArgs, args: &StreamArgs) -> anyhow::Result<()> {
    let mut settings = global.settings()?;
    if let Some(t) = &args.trigger {
        settings.stream.trigger = parse_duration(t).map_err(|e| anyhow::anyhow!("--trigger: {e}"))?;
    }
    if let Some(l) = &args.allowed_lateness {
        settings.stream.allowed_lateness =
            parse_duration(l).map_err(|e| anyhow::anyhow!("--allowed-lateness: {e}"))?;
    }
    let source = match (&args.kafka, &args.topic) {
        (Some(brokers), Some(topic)) => {
            StreamSource::Kafka { brokers: brokers.clone(), topic: topic.clone() }
        }
        _ => StreamSource::Files,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
        eprintln!("cloudlake: stopping after the current micro-batch");
        flag.store(true, Ordering::Relaxed);
    });
    let options = StreamOptions { once: args.once, stop, ..Default::default() };
    let quiet = global.quiet || args.json;
    let report = stream::run(&settings, &source, &options, &|b| {
        if !quiet {
            let m = &b.metrics;
            eprintln!(
                "batch {}: read {} · new {} · duplicates {} · quarantined {} · late {} · corrected keys {} · {} ms · watermark {}",
                b.batch,
                m.bronze.read,
                m.bronze.written,
                m.bronze.duplicates,
                m.bronze.quarantined + m.silver.quarantined,
                m.late_events,
                m.corrected_keys,
                b.millis,
                b.watermark.as_deref().unwrap_or("-"),
            );
        }
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let t = &report.totals;
        println!(
            "stream {}: {} batches ({} finished after a crash, {} gold steps), {} events read, {} new, {} duplicates, {} quarantined, {} late ({} gold keys corrected), {:.0} events/s; last batch {}, watermark {}",
            report.stream,
            report.batches,
            report.recovered,
            report.gold_steps,
            t.bronze.read,
            t.bronze.written,
            t.bronze.duplicates,
            t.bronze.quarantined + t.silver.quarantined,
            t.late_events,
            t.corrected_keys,
            report.events_per_s,
            report.last_batch,
            report.watermark.as_deref().unwrap_or("-"),
        );
        if let Some(d) = &report.held_from {
            println!("state held in memory from {d} on (older dates let go within [stream] state_memory_mb)");
        }
    }
    Ok(())
}

/// Options of `cloudlake produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Kafka brokers (HOST:PORT,...)
    #[arg(long, value_name = "BROKERS")]
    kafka: String,
    /// Topic to write (created when absent)
    #[arg(long, value_name = "TOPIC")]
    topic: String,
    /// Partitions of the topic when it is created
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Print what was sent as JSON
    #[arg(long)]
    json: bool,
}

pub async fn produce(global: &GlobalArgs, args: &ProduceArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let dir = settings.landing.join(cloudlake::bronze::usage_events::LANDING_DIR);
    if !dir.is_dir() {
        anyhow::bail!("no event folder at {}; point --landing at a landing folder", dir.display());
    }
    let files = cloudlake::bronze::discover_events(&dir)?;
    let report = stream::kafka::produce(&args.kafka, &args.topic, files, args.partitions).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let secs = report.millis as f64 / 1000.0;
        println!(
            "produced {} messages ({:.1} MB) from {} files to {} in {:.2} s ({:.0} messages/s)",
            report.messages,
            report.bytes as f64 / 1e6,
            report.files,
            args.topic,
            secs,
            report.messages as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}
