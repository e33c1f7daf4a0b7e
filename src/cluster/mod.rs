//! Distributed execution: silver and gold on a DataFusion Ballista cluster (`--ballista
//! df://HOST:PORT`), and the `scheduler` and `executor` processes of such a cluster.
//!
//! [`connect`] gives a `SessionContext` whose queries run on the cluster: the client plans, the
//! scheduler splits the plan into stages and the executors run them. Every stage of the
//! pipeline takes a `SessionContext`, so the same SQL runs locally or there; what differs is
//! how tables are handed over ([`register_delta`], [`register_batches`]):
//! - a lake table is sent as the Parquet files of its current Delta snapshot ([`FilesTable`]);
//! - rows a stage computed and registers for the next one (a silver table before its Delta
//!   commit, the daily features) are written to a scratch folder under the lake, as Parquet,
//!   and sent the same way, so plans stay small and executors read them like any table.
//!
//! The executors therefore read the lake's files themselves: the lake must be a folder they
//! all see at the same path (one machine, or a shared file system). The client writes every
//! Delta commit, as it does locally.

pub mod codec;
pub mod table;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SessionStateBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::DeltaTable;

use crate::lake::Lake;
use crate::{Error, Result};
pub use codec::Codec;
pub use table::FilesTable;

/// Marks a session whose queries run on a cluster; lives in its `SessionConfig`.
#[derive(Debug)]
pub struct Cluster {
    /// The scheduler, `df://host:port`.
    pub url: String,
    /// Where registered batches are written for the executors; removed when the session goes.
    scratch: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The scheduler's address in a `df://host:port` URL.
pub fn scheduler_addr(url: &str) -> Result<(String, u16)> {
    let bad = || Error::Usage(format!("--ballista {url} is not a scheduler URL; expected df://HOST:PORT"));
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    if parsed.scheme() != "df" {
        return Err(bad());
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    Ok((host.to_string(), parsed.port().unwrap_or(50050)))
}

/// A session whose queries run on the Ballista cluster at `url` (`df://host:port`), for a lake
/// the executors can read. Fails in one sentence when the lake is in object storage or the
/// scheduler does not answer within 5 s.
pub async fn connect(url: &str, lake: &Lake) -> Result<SessionContext> {
    let (host, port) = scheduler_addr(url)?;
    if lake.is_remote() {
        return Err(Error::Usage(format!(
            "--ballista needs a lake in a folder the executors share; {} is in object storage",
            lake.location()
        )));
    }
    reachable(&host, port, Duration::from_secs(5)).await?;
    // Scratch folders a killed run left behind (the caller holds the lake's events lock).
    let root = lake.state_dir().join("_cluster");
    if root.is_dir() {
        std::fs::remove_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    }
    let scratch = root.join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let config = crate::lake::tune(SessionConfig::new_with_ballista())
        .with_ballista_logical_extension_codec(Arc::new(Codec::default()))
        .with_extension(Arc::new(Cluster { url: url.to_string(), scratch }));
    let state = SessionStateBuilder::new().with_config(config).with_default_features().build();
    let ctx = SessionContext::remote_with_state(url, state).await?;
    crate::silver::conform::register(&ctx);
    Ok(ctx)
}

async fn reachable(host: &str, port: u16, within: Duration) -> Result<()> {
    let addr = format!("{host}:{port}");
    let attempt = tokio::time::timeout(within, tokio::net::TcpStream::connect(&addr)).await;
    match attempt {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Cluster(format!("cannot reach the scheduler at {addr}: {e}"))),
        Err(_) => Err(Error::Cluster(format!("the scheduler at {addr} did not answer within {within:?}"))),
    }
}

/// The cluster `ctx` runs on, if any.
pub fn of(ctx: &SessionContext) -> Option<Arc<Cluster>> {
    ctx.state_ref().read().config().get_extension::<Cluster>()
}

/// Registers the current snapshot of a Delta table as `name`, in the way `ctx` can run it.
pub async fn register_delta(ctx: &SessionContext, name: &str, table: &DeltaTable) -> Result<()> {
    let provider: Arc<dyn datafusion::catalog::TableProvider> = if of(ctx).is_some() {
        Arc::new(FilesTable::from_delta(table, name).await?)
    } else {
        table.update_datafusion_session(&ctx.state()).map_err(|e| Error::delta(name.to_string(), e))?;
        table.table_provider().await?
    };
    let _ = ctx.deregister_table(name)?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// Registers `batches` as `name` on a cluster session: one Parquet file in the scratch folder,
/// scanned as a [`FilesTable`].
pub fn register_batches(
    ctx: &SessionContext,
    cluster: &Cluster,
    name: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let path = cluster.scratch.join(format!("{name}-{}.parquet", uuid::Uuid::new_v4().simple()));
    let size = write_parquet(&path, schema.clone(), batches)?;
    let location = object_store::path::Path::from_absolute_path(&path)
        .map_err(|e| Error::Internal(format!("scratch file {}: {e}", path.display())))?;
    let files = table::Files {
        store: "file://".into(),
        partition_cols: vec![],
        files: vec![table::DataFile { path: location.to_string(), size, partition_values: vec![] }],
    };
    let _ = ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(FilesTable::new(schema, files)?))?;
    Ok(())
}

fn write_parquet(path: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<u64> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let properties = crate::lake::writer_properties(&schema, &crate::lake::unique_text_of(batches));
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties))
        .map_err(|e| Error::Internal(format!("scratch file {}: {e}", path.display())))?;
    for b in batches {
        writer.write(b).map_err(|e| Error::Internal(format!("scratch file {}: {e}", path.display())))?;
    }
    writer.close().map_err(|e| Error::Internal(format!("scratch file {}: {e}", path.display())))?;
    Ok(std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len())
}

/// Runs a scheduler on `bind` until the process is stopped.
pub async fn run_scheduler(bind: &str) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    let addr = socket_addr(bind)?;
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        external_host: addr.ip().to_string(),
        override_logical_codec: Some(Arc::new(Codec::default())),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(cluster_err)?;
    tracing::info!(%addr, "Ballista scheduler listening.");
    ballista_scheduler::scheduler_process::start_server(cluster, addr, Arc::new(config))
        .await
        .map_err(cluster_err)
}

/// What an executor process needs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `host:port`.
    pub scheduler: String,
    /// Address to bind; its port serves Arrow Flight (shuffle data).
    pub bind: String,
    /// Host the scheduler and other executors reach this one at (default: the bind address).
    pub external_host: Option<String>,
    /// Port of the executor's gRPC service.
    pub grpc_port: u16,
    /// Tasks run at once (default: the cores).
    pub concurrent_tasks: usize,
    /// Folder for shuffle files (default: a temporary folder).
    pub work_dir: Option<PathBuf>,
}

/// Runs an executor registered with its scheduler until the process is stopped.
pub async fn run_executor(opts: &ExecutorOptions) -> Result<()> {
    use ballista_core::registry::BallistaFunctionRegistry;
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let addr = socket_addr(&opts.bind)?;
    let (scheduler_host, scheduler_port) = opts
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| {
            Error::Usage(format!(
                "--scheduler {} is not a scheduler address; expected HOST:PORT",
                opts.scheduler
            ))
        })?;
    let external_host = match &opts.external_host {
        Some(h) => h.clone(),
        None if addr.ip().is_unspecified() => {
            return Err(Error::Usage(format!(
                "--bind {} listens on every interface; give --external-host, the address the scheduler and the other executors reach this one at",
                opts.bind
            )));
        }
        None => addr.ip().to_string(),
    };
    let config = ExecutorProcessConfig {
        bind_host: addr.ip().to_string(),
        external_host: Some(external_host),
        port: addr.port(),
        grpc_port: opts.grpc_port,
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrent_tasks.max(1),
        work_dir: opts.work_dir.as_ref().map(|p| p.to_string_lossy().into_owned()),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: 5,
        override_logical_codec: Some(Arc::new(Codec::default())),
        // Every function a pipeline session has: a default DataFusion session's (Ballista's
        // default registry lacks the nested ones, such as `array_element`, which the silver SQL
        // uses) and the conformance functions.
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(
            &crate::lake::session().state(),
        ))),
        ..Default::default()
    };
    tracing::info!(%addr, scheduler = %opts.scheduler, "Ballista executor starting.");
    start_executor_process(Arc::new(config)).await.map_err(cluster_err)
}

fn socket_addr(text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage(format!("{text} is not an address to bind; expected HOST:PORT")))
}

fn cluster_err(e: ballista_core::error::BallistaError) -> Error {
    Error::Cluster(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls_are_df_host_port() {
        assert_eq!(scheduler_addr("df://127.0.0.1:50050").unwrap(), ("127.0.0.1".into(), 50050));
        assert_eq!(scheduler_addr("df://sched").unwrap(), ("sched".into(), 50050));
        for bad in ["http://x:1", "127.0.0.1:50050", "df://", "nonsense"] {
            let e = scheduler_addr(bad).unwrap_err().to_string();
            assert!(e.contains("expected df://HOST:PORT"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_lake_in_object_storage_or_a_silent_scheduler_is_one_sentence() {
        let remote = Lake::new("s3://bucket/lake").unwrap();
        let e = connect("df://127.0.0.1:1", &remote).await.err().unwrap().to_string();
        assert!(e.contains("executors share"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let local = Lake::new(dir.path()).unwrap();
        let e = connect("df://127.0.0.1:1", &local).await.err().unwrap().to_string();
        assert!(e.contains("cannot reach the scheduler at 127.0.0.1:1"), "{e}");
    }
}
