//! One error type for the library, in the style of DataFusion and delta-rs.
//!
//! Two kinds of failure exist:
//! 1. *Expected* errors: the caller or the environment is at fault (a landing file is missing, a
//!    config key is misspelt, a SQL statement does not parse). Their message names the thing,
//!    the place and, where possible, the fix.
//! 2. [`Error::Internal`]: an invariant of cloudlake itself broke.
//!
//! Wrapped errors keep their cause as `source()` and do not repeat it in their own message: the
//! CLI prints the whole chain once, `cloudlake: I/O error on X: Permission denied`.
//! That is a bug in cloudlake,
//!    never bad input; bad *records* are quarantined, not raised (see `quarantine`).

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A landing input that the run needs is absent.
    #[error(
        "landing input {path} not found; put the {source_name} data there or point --landing at the folder that holds it"
    )]
    LandingMissing {
        /// Where the file or folder was expected.
        path: PathBuf,
        /// The landing source it belongs to.
        source_name: String,
    },
    /// Reading or writing a file failed (permissions, disk full, closed pipe).
    #[error("I/O error on {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The configuration file or a setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A user-supplied argument is invalid (bad table name, bad format, ...).
    #[error("{0}")]
    Usage(String),
    /// A data-quality rule whose action is `fail` was violated.
    #[error("data-quality rule {rule} failed on {source_name}: {reason}")]
    RuleFailed {
        /// The rule id.
        rule: String,
        /// The source or table the rule guards.
        source_name: String,
        /// What was found.
        reason: String,
    },
    /// Reading or writing a Delta table failed.
    #[error("Delta table {table}")]
    Delta {
        /// The table (layer/name).
        table: String,
        /// delta-rs's reason.
        source: Box<deltalake::DeltaTableError>,
    },
    /// Reading or writing a file of an object-storage lake failed.
    #[error("object storage {location}")]
    Storage {
        /// The object's URL.
        location: String,
        /// The object store's reason.
        source: Box<deltalake::ObjectStoreError>,
    },
    /// A DataFusion plan failed (SQL errors from `cloudlake sql` land here).
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// Arrow failed to build or convert a batch.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// JSON (de)serialisation of a report or checkpoint failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Talking to Cassandra failed (connection, schema, a write or read that kept failing).
    #[error("Cassandra: {0}")]
    Cassandra(String),
    /// Talking to Kafka failed (broker unreachable past the retry bound, offsets gone).
    #[error("Kafka: {0}")]
    Kafka(String),
    /// Talking to the Ballista cluster failed (scheduler unreachable, a job that failed).
    #[error("Ballista cluster: {0}")]
    Cluster(String),
    /// Another cloudlake process holds the lake's events lock.
    #[error("{0}")]
    Busy(String),
    /// A broken invariant: a bug in cloudlake, not a problem with the input.
    #[error("internal error (a bug in cloudlake, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// A spawned task (`what`) that panicked or was cancelled: an invariant broke.
    pub fn task(what: &str, source: tokio::task::JoinError) -> Self {
        Error::Internal(format!("{what} failed: {source}"))
    }

    /// Wraps a delta-rs error with the table it concerns.
    pub fn delta(table: impl Into<String>, source: deltalake::DeltaTableError) -> Self {
        Error::Delta { table: table.into(), source: Box::new(source) }
    }
}
