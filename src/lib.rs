//! cloudlake: the analytics lakehouse of a cloud provider.
//!
//! ```text
//! landing (immutable files, Kafka topic)          crate::landing  (csv, jsonl readers), crate::stream
//!    │  batch: CSV masters + billing     stream: usage events
//!    ▼
//! bronze   typed, deduplicated, + ingest metadata  crate::bronze   (one file per source)
//!    ▼                                        ──►  crate::quarantine
//! silver   conformed, validated, enriched          crate::silver   (rules beside each table)
//!    ▼
//! gold     business marts                          crate::gold     (one file per mart, reconcile)
//!    ▼
//! serving  Cassandra · REST API · dashboard · SQL
//! ```
//!
//! - [`lake`]: Delta tables under one root, registered in DataFusion as `<layer>_<name>`;
//! - [`stream`]: usage events in exactly-once micro-batches from files or Kafka (`run` uses it);
//! - [`cluster`]: silver and gold on a DataFusion Ballista cluster (`run --ballista`);
//! - [`pipeline`]: `cloudlake run` as a library call; [`report`]: the run report;
//! - [`config`]: flags, environment, TOML; [`error`]: the one error type;
//! - [`parallel`]: CPU-bound work over independent items on every core.
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
pub mod bronze;
pub mod cluster;
pub mod config;
pub mod error;
pub mod generate;
pub mod gold;
pub mod lake;
pub mod landing;
pub mod parallel;
pub mod pipeline;
pub mod quality;
pub mod quarantine;
pub mod report;
pub mod serving;
pub mod silver;
pub mod sql;
pub mod stream;
pub mod telemetry;

pub use error::{Error, Result};
