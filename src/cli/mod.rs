//! Command-line interface (bin-only): clap definitions, one file per command.
//!
//! The only place `anyhow` is used. Errors print once as `cloudlake: <cause chain>` with exit
//! code 2; a closed output pipe (`cloudlake sql ... | head`) exits 0.

mod cluster;
mod generate;
mod maintain;
mod publish;
mod quality;
mod query;
mod run;
mod serve;
mod sql;
mod stream;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use cloudlake::config::{FileConfig, Settings};

/// cloudlake — the analytics lakehouse: landing → bronze → silver → gold on Delta Lake.
#[derive(Debug, Parser)]
#[command(name = "cloudlake", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Landing folder: the CSV masters and usage_events_stream/ [default: datalake/landing]
    #[arg(long, env = "CLOUDLAKE_LANDING", global = true, value_name = "DIR")]
    landing: Option<PathBuf>,
    /// Lake root, where bronze/, silver/, gold/, quarantine/ and _runs/ live: a folder or
    /// s3://bucket/prefix (endpoint and keys from AWS_* variables) [default: datalake]
    #[arg(long, env = "CLOUDLAKE_LAKE", global = true, value_name = "DIR")]
    lake: Option<PathBuf>,
    /// TOML config file (keys: landing, lake, batch_mb) [default: ./cloudlake.toml if present]
    #[arg(long, env = "CLOUDLAKE_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve from Cassandra at these contact points (HOST:PORT,...); `[cassandra]` in the config file sets the rest
    #[arg(long, env = "CLOUDLAKE_CASSANDRA", global = true, value_name = "HOSTS", value_delimiter = ',')]
    cassandra: Option<Vec<String>>,
    /// Log each step at info level even on a terminal (CLOUDLAKE_LOG sets any level)
    #[arg(long, short, global = true)]
    verbose: bool,
    /// No progress bar
    #[arg(long, short, global = true)]
    quiet: bool,
}

impl GlobalArgs {
    fn settings(&self) -> anyhow::Result<Settings> {
        let mut file = FileConfig::load(self.config.as_deref())?;
        if let Some(hosts) = &self.cassandra {
            let mut c = file.cassandra.take().unwrap_or_default();
            c.contact_points = hosts.iter().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
            file.cassandra = Some(c);
        }
        Ok(Settings::resolve(self.landing.clone(), self.lake.clone(), file)?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline once over all available landing data and print a summary
    Run(run::RunArgs),
    /// Follow new usage event files (or a Kafka topic) in exactly-once micro-batches; --once processes what is there and exits
    Stream(stream::StreamArgs),
    /// Replay the landing event files into a Kafka topic, one message per event
    Produce(stream::ProduceArgs),
    /// Run ad-hoc SQL over every lake table (bronze_*, silver_*, gold_*, quarantine_*)
    Sql(sql::SqlArgs),
    /// Publish the gold marts to Cassandra (idempotent upserts; rows gone from the lake are deleted)
    Publish(publish::PublishArgs),
    /// The dashboard queries (daily-usage, top-services, critical-tickets, revenue, genai-tokens, anomalies)
    Query(query::QueryArgs),
    /// Serve the REST API and the dashboard (needs API keys: see api-key)
    Serve(serve::ServeArgs),
    /// Make a new random API key and print the config entry with its hash
    ApiKey(serve::ApiKeyArgs),
    /// Write synthetic landing data with the bundled dataset's shape and flaws, N times its size
    Generate(generate::GenerateArgs),
    /// Compact small files and vacuum files old versions no longer need, in every table
    Maintain(maintain::MaintainArgs),
    /// Data-quality report of the latest run: per source and rule, counts, pass rate, examples
    Quality(quality::QualityArgs),
    /// Run a Ballista scheduler, for `run --ballista df://HOST:PORT`
    Scheduler(cluster::SchedulerArgs),
    /// Run a Ballista executor registered with a scheduler
    Executor(cluster::ExecutorArgs),
}

/// Parses the command line, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    cloudlake::telemetry::init(cli.global.verbose);
    if matches!(cli.command, Command::Run(_)) {
        crate::return_freed_pages_sooner();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cloudlake: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => run::run(&cli.global, args).await,
            Command::Sql(args) => sql::run(&cli.global, args).await,
            Command::Stream(args) => stream::run(&cli.global, args).await,
            Command::Produce(args) => stream::produce(&cli.global, args).await,
            Command::Quality(args) => quality::run(&cli.global, args).await,
            Command::Query(args) => query::run(&cli.global, args).await,
            Command::Publish(args) => publish::run(&cli.global, args).await,
            Command::Maintain(args) => maintain::run(&cli.global, args).await,
            Command::Generate(args) => generate::run(args).await,
            Command::Serve(args) => serve::run(&cli.global, args).await,
            Command::ApiKey(args) => serve::api_key(args),
            Command::Scheduler(args) => cluster::scheduler(args).await,
            Command::Executor(args) => cluster::executor(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cloudlake: {}", one_sentence(&err));
            ExitCode::from(2)
        }
    }
}

/// The cause chain on one line, without the repeats some errors carry (DataFusion wraps Arrow
/// errors and also returns them as their source, which `{:#}` would print two or three times).
fn one_sentence(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<cloudlake::Error>().is_some_and(|e| {
                matches!(e, cloudlake::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn error_chains_print_once_without_repeats() {
        let inner = std::io::Error::other("disk full");
        let err = anyhow::Error::new(cloudlake::Error::io("/x/report.json", inner))
            .context("cannot write the run report");
        assert_eq!(one_sentence(&err), "cannot write the run report: I/O error on /x/report.json: disk full");
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_parses_with_global_flags_anywhere() {
        let cli =
            Cli::try_parse_from(["cloudlake", "run", "--lake", "/tmp/l", "--landing", "/tmp/x"]).unwrap();
        assert_eq!(cli.global.lake, Some(PathBuf::from("/tmp/l")));
        assert!(matches!(cli.command, Command::Run(_)));
    }

    #[test]
    fn sql_parses_query_and_format() {
        let cli = Cli::try_parse_from(["cloudlake", "sql", "SELECT 1", "--format", "json"]).unwrap();
        match cli.command {
            Command::Sql(a) => {
                assert_eq!(a.query, "SELECT 1");
                assert_eq!(a.format, cloudlake::sql::OutputFormat::Json);
            }
            _ => panic!("expected sql"),
        }
        assert!(Cli::try_parse_from(["cloudlake", "sql", "SELECT 1", "--format", "xml"]).is_err());
    }
}
