//! `cloudlake scheduler` and `cloudlake executor`: the processes of a Ballista cluster that
//! `run --ballista` sends silver and gold to.

use std::path::PathBuf;

use clap::Args;
use cloudlake::cluster::{self, ExecutorOptions};

/// Options of `cloudlake scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (clients use df://HOST:PORT)
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
    bind: String,
}

/// Options of `cloudlake executor`.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler to register with
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
    scheduler: String,
    /// Address to listen on for shuffle data (Arrow Flight)
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
    bind: String,
    /// Host the scheduler and the other executors reach this one at [default: the --bind host]
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    /// Port of the executor's gRPC service
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Tasks run at once [default: the number of cores]
    #[arg(long)]
    concurrent_tasks: Option<usize>,
    /// Folder for shuffle files [default: a temporary folder]
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

pub async fn scheduler(args: &SchedulerArgs) -> anyhow::Result<()> {
    Ok(cluster::run_scheduler(&args.bind).await?)
}

pub async fn executor(args: &ExecutorArgs) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let opts = ExecutorOptions {
        scheduler: args.scheduler.clone(),
        bind: args.bind.clone(),
        external_host: args.external_host.clone(),
        grpc_port: args.grpc_port,
        concurrent_tasks: args.concurrent_tasks.unwrap_or(cores),
        work_dir: args.work_dir.clone(),
    };
    Ok(cluster::run_executor(&opts).await?)
}
