//! Logging and progress: tracing to stderr, and a progress bar when stderr is a terminal.
//!
//! On a terminal, long steps show an indicatif bar and logs default to warnings; elsewhere (CI,
//! pipes, files) each step is a plain `INFO` log line. `CLOUDLAKE_LOG` (an `EnvFilter`
//! directive such as `debug` or `cloudlake=debug`) overrides the level.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `verbose` raises the default level to `info` on terminals.
pub fn init(verbose: bool) {
    // Dependencies (delta-rs logs every commit at INFO) stay at warnings unless asked.
    // The Cassandra driver logs each failed connection attempt at ERROR while cloudlake retries;
    // cloudlake's own warning names the node, the cause and the next attempt instead.
    // Likewise librdkafka while a Kafka broker restarts (cloudlake warns and retries).
    // delta-rs warns on every MERGE that a scan metric DataFusion 55 no longer reports is derived.
    let default = if std::io::stderr().is_terminal() && !verbose {
        "warn,scylla=off,rdkafka=off,librdkafka=error,deltalake_core::operations::merge=error"
    } else {
        "warn,scylla=off,rdkafka=off,librdkafka=error,deltalake_core::operations::merge=error,cloudlake=info"
    };
    let filter = EnvFilter::try_from_env("CLOUDLAKE_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default))
        // delta-rs's kernel logs an ERROR when a table is created in an empty folder; it is not one.
        .add_directive("buoyant_kernel=off".parse().expect("static directive parses"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Progress over a known number of steps.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar of `steps` when stderr is a terminal and `enabled`, else log lines only.
    pub fn new(steps: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(steps);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                    .expect("static template parses"),
            );
            bar
        });
        Progress { bar }
    }

    /// Announces the step that starts now.
    pub fn start(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => tracing::info!("{msg}"),
        }
    }

    /// Marks one step done.
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
