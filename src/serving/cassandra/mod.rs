//! Serving from Apache Cassandra (or any CQL-compatible cluster): connection, schema, retries.
//!
//! - [`schema`]: the keyspace and the versioned CQL files under `cql/`, applied idempotently;
//! - [`publish`]: gold marts and query rollups upserted with prepared statements, concurrent
//!   bounded batches and retries; rows deleted upstream are deleted here too;
//! - [`query`]: the five queries, each reading one or a few partitions.
//!
//! Configured by the `[cassandra]` table of the config file, or `--cassandra HOST:PORT,...`:
//!
//! ```toml
//! [cassandra]
//! contact_points = ["10.0.0.5:9042", "10.0.0.6:9042"]
//! keyspace = "cloud_analytics"        # created when absent
//! local_datacenter = "dc1"            # nodes of this DC are preferred; keyspace uses NetworkTopologyStrategy
//! replication_factor = 3              # only used when cloudlake creates the keyspace
//! username = "cloudlake"              # password here or in CLOUDLAKE_CASSANDRA_PASSWORD
//! retry_seconds = 30                  # how long one operation is retried before giving up
//! concurrency = 32                    # batches in flight while publishing
//! [cassandra.tls]
//! ca_file = "/etc/cloudlake/cassandra-ca.pem"   # PEM CA of the cluster's certificates
//! cert_file = "client.pem"                     # optional client certificate (mutual TLS)
//! key_file = "client.key"
//! ```

pub mod publish;
pub mod query;
pub mod schema;
pub mod values;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    DbError, ExecutionError, NextPageError, NextRowError, PagerExecutionError, PrepareError,
    RequestAttemptError,
};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Row;
use serde::Deserialize;

use crate::{Error, Result};

/// Default keyspace (SPEC section 7).
pub const DEFAULT_KEYSPACE: &str = "cloud_analytics";

/// Connection and publishing settings of the `[cassandra]` config table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CassandraConfig {
    /// `host:port` of one or more nodes; the driver discovers the rest of the cluster.
    pub contact_points: Vec<String>,
    /// Keyspace holding the serving tables.
    pub keyspace: String,
    /// Datacenter whose nodes are preferred (and named in the replication of a new keyspace).
    pub local_datacenter: Option<String>,
    /// Replication factor of a keyspace cloudlake creates.
    pub replication_factor: u32,
    /// User name for password authentication.
    pub username: Option<String>,
    /// Password (`CLOUDLAKE_CASSANDRA_PASSWORD` overrides it, and keeps it out of files).
    pub password: Option<String>,
    /// TLS to the cluster.
    pub tls: Option<TlsConfig>,
    /// How long one operation (connect, a batch, a read) is retried before giving up.
    pub retry_seconds: u64,
    /// Batches in flight while publishing.
    pub concurrency: usize,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            contact_points: vec!["127.0.0.1:9042".into()],
            keyspace: DEFAULT_KEYSPACE.into(),
            local_datacenter: None,
            replication_factor: 1,
            username: None,
            password: None,
            tls: None,
            retry_seconds: 30,
            concurrency: 32,
        }
    }
}

/// TLS settings. Certificates must name the nodes' IP addresses (the driver verifies the
/// address it connects to).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the nodes' certificates.
    pub ca_file: PathBuf,
    /// PEM client certificate chain, for clusters that require client authentication.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl CassandraConfig {
    /// Checks values before anything connects.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.contact_points.is_empty() {
            return Err("[cassandra] contact_points is empty".into());
        }
        let ks = &self.keyspace;
        if ks.is_empty()
            || ks.len() > 48
            || !ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || ks.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(format!(
                "[cassandra] keyspace {ks:?} is not a valid name (letters, digits, '_', at most 48)"
            ));
        }
        if let Some(dc) = &self.local_datacenter
            && (dc.is_empty() || dc.contains('\''))
        {
            return Err(format!("[cassandra] local_datacenter {dc:?} is not a valid name"));
        }
        if self.replication_factor == 0 || self.concurrency == 0 {
            return Err("[cassandra] replication_factor and concurrency must be at least 1".into());
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err("[cassandra.tls] cert_file and key_file go together".into());
        }
        Ok(())
    }

    /// The contact points, comma-joined, for messages.
    pub fn nodes(&self) -> String {
        self.contact_points.join(",")
    }
}

/// An open session to the serving keyspace, with a cache of prepared statements.
pub struct Cassandra {
    session: Session,
    config: CassandraConfig,
    prepared: Mutex<HashMap<String, PreparedStatement>>,
}

impl std::fmt::Debug for Cassandra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cassandra").field("nodes", &self.config.nodes()).finish()
    }
}

impl Cassandra {
    /// Connects, retrying for up to `retry_seconds` while no node answers. Publishing creates the
    /// keyspace and tables ([`schema::apply`]); queries only read.
    pub async fn connect(config: &CassandraConfig) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.contact_points)
            .connection_timeout(Duration::from_secs(5));
        if let Some(dc) = &config.local_datacenter {
            builder = builder.prefer_datacenter(dc.clone());
        }
        let password = std::env::var("CLOUDLAKE_CASSANDRA_PASSWORD").ok().or_else(|| config.password.clone());
        if let Some(user) = &config.username {
            builder = builder.user(user.clone(), password.unwrap_or_default());
        }
        if let Some(tls) = &config.tls {
            builder = builder.tls_context(Some(tls_context(tls)?));
        }
        let budget = Duration::from_secs(config.retry_seconds);
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        let session = loop {
            match builder.build().await {
                Ok(s) => break s,
                Err(e) if started.elapsed() + delay < budget => {
                    tracing::warn!(
                        "Cassandra at {} not reachable yet ({e}); retrying in {delay:?}",
                        config.nodes()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(Error::Cassandra(format!(
                        "cannot connect to {} (tried for {} s): {e}; start it with `scripts/cassandra.sh start` or fix [cassandra] contact_points",
                        config.nodes(),
                        started.elapsed().as_secs()
                    )));
                }
            }
        };
        Ok(Cassandra { session, config: config.clone(), prepared: Mutex::new(HashMap::new()) })
    }

    /// The settings this session was opened with.
    pub fn config(&self) -> &CassandraConfig {
        &self.config
    }

    /// The keyspace of the serving tables.
    pub fn keyspace(&self) -> &str {
        &self.config.keyspace
    }

    /// The driver session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Prepares `cql` once per session (statements are cached by text).
    pub async fn prepare(&self, cql: &str) -> Result<PreparedStatement> {
        if let Some(p) = self.prepared.lock().map_err(|_| poisoned())?.get(cql) {
            return Ok(p.clone());
        }
        let p = self
            .retry(&format!("preparing `{cql}`"), || async {
                self.session.prepare(cql).await.map_err(|e| Failure::from(ExecutionError::PrepareError(e)))
            })
            .await?;
        self.prepared.lock().map_err(|_| poisoned())?.insert(cql.to_string(), p.clone());
        Ok(p)
    }

    /// Every row `cql` returns for `values`, fetched page by page (retried as a whole).
    pub async fn rows(&self, what: &str, cql: &str, values: &(impl SerializeRow + Sync)) -> Result<Vec<Row>> {
        let stmt = self.prepare(cql).await?;
        self.retry(what, || async {
            let pager = self.session.execute_iter(stmt.clone(), values).await?;
            let rows: Vec<Row> = pager.rows_stream::<Row>().map_err(Failure::fatal)?.try_collect().await?;
            Ok(rows)
        })
        .await
    }

    /// Runs `op` until it succeeds, retrying transient failures (no connection, timeouts,
    /// unavailable or overloaded nodes) with exponential backoff for up to `retry_seconds`.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let budget = Duration::from_secs(self.config.retry_seconds);
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut attempts = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.transient && started.elapsed() + delay < budget => {
                    tracing::warn!("{what}: {}; retry {attempts} in {delay:?}", e.message);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    attempts += 1;
                }
                Err(e) => {
                    let tried = if attempts > 1 {
                        format!(" after {attempts} attempts in {} s", started.elapsed().as_secs())
                    } else {
                        String::new()
                    };
                    return Err(Error::Cassandra(format!(
                        "{what} failed{tried} ({}): {}",
                        self.config.nodes(),
                        e.message
                    )));
                }
            }
        }
    }
}

fn poisoned() -> Error {
    Error::Internal("prepared-statement cache lock poisoned".into())
}

/// A failed request: its message and whether it may pass by itself (a node restarting, a
/// timeout) as opposed to a request the cluster will always refuse (bad CQL, wrong types).
#[derive(Debug)]
pub struct Failure {
    transient: bool,
    message: String,
}

impl Failure {
    /// A failure that retrying cannot fix.
    pub fn fatal(e: impl std::fmt::Display) -> Self {
        Failure { transient: false, message: e.to_string() }
    }
}

impl From<ExecutionError> for Failure {
    fn from(e: ExecutionError) -> Self {
        let transient = match &e {
            ExecutionError::BadQuery(_) | ExecutionError::UseKeyspaceError(_) => false,
            // A statement the node refuses to prepare (bad CQL, unknown column) stays refused.
            ExecutionError::PrepareError(PrepareError::AllAttemptsFailed {
                first_attempt: RequestAttemptError::DbError(db, _),
            })
            | ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::TruncateError
                    | DbError::ServerError
                    | DbError::RateLimitReached { .. }
            ),
            _ => true,
        };
        Failure { transient, message: e.to_string() }
    }
}

impl From<PagerExecutionError> for Failure {
    fn from(e: PagerExecutionError) -> Self {
        let transient = !matches!(e, PagerExecutionError::SerializationError(_));
        Failure { transient, message: e.to_string() }
    }
}

impl From<NextRowError> for Failure {
    fn from(e: NextRowError) -> Self {
        let transient = matches!(e, NextRowError::NextPageError(NextPageError::RequestFailure(_)));
        Failure { transient, message: e.to_string() }
    }
}

fn tls_context(tls: &TlsConfig) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read_err = |path: &PathBuf, e: rustls_pki_types::pem::Error| {
        Error::Config(format!("[cassandra.tls] cannot read {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca_file).map_err(|e| read_err(&tls.ca_file, e))? {
        roots
            .add(cert.map_err(|e| read_err(&tls.ca_file, e))?)
            .map_err(|e| Error::Config(format!("[cassandra.tls] {}: {e}", tls.ca_file.display())))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| read_err(cert, e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| read_err(cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| Error::Config(format!("[cassandra.tls] client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c: CassandraConfig = toml::from_str("contact_points = [\"10.0.0.1:9042\"]\n").unwrap();
        assert_eq!(c.keyspace, DEFAULT_KEYSPACE);
        assert!(c.validate().is_ok());
        let bad = CassandraConfig { keyspace: "x; DROP".into(), ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("not a valid name"));
        assert!(toml::from_str::<CassandraConfig>("contact_pionts = []\n").is_err());
        let half_tls: CassandraConfig =
            toml::from_str("[tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\n").unwrap();
        assert!(half_tls.validate().is_err());
    }

    #[test]
    fn missing_tls_files_are_named() {
        let tls = TlsConfig { ca_file: "/nonexistent/ca.pem".into(), cert_file: None, key_file: None };
        let err = tls_context(&tls).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
