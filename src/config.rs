//! Settings: flags, then `CLOUDLAKE_*` environment variables, then the TOML config file, then
//! defaults (SPEC section 2).
//!
//! The config file is `--config PATH` (or `CLOUDLAKE_CONFIG`), else `./cloudlake.toml` when it
//! exists. Unknown keys are an error, so a typo fails the run instead of being ignored:
//!
//! ```toml
//! landing = "datalake/landing"   # landing folder
//! lake = "datalake"              # lake root
//! batch_mb = 64                  # landing megabytes per micro-batch
//!
//! [rules]                        # override a data-quality rule's action: warn | quarantine | fail
//! "usage_events.after_resource_created" = "fail"
//!
//! [anomaly]                      # cost anomaly thresholds (see silver::anomalies)
//! window_days = 28
//! zscore_threshold = 3.0
//!
//! [stream]                       # micro-batches of usage events (see stream::StreamConfig)
//! trigger = "500ms"
//! allowed_lateness = "1d"
//!
//! [cassandra]                    # serve from Cassandra (see serving::cassandra for every key)
//! contact_points = ["127.0.0.1:9042"]
//! ```

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::ApiConfig;
use crate::serving::cassandra::CassandraConfig;
use crate::silver::SilverSettings;
use crate::silver::anomalies::AnomalyConfig;
use crate::silver::rules::Action;
use crate::stream::{StreamConfig, StreamSettings};
use crate::{Error, Result};

/// Default landing folder.
pub const DEFAULT_LANDING: &str = "datalake/landing";
/// Default lake root.
pub const DEFAULT_LAKE: &str = "datalake";
/// Default config file, read when present.
pub const DEFAULT_CONFIG: &str = "cloudlake.toml";
/// Default micro-batch bound, in megabytes of landing input.
pub const DEFAULT_BATCH_MB: u64 = 64;

/// The config file's contents. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Landing folder (CSV masters and `usage_events_stream/`).
    pub landing: Option<PathBuf>,
    /// Lake root folder.
    pub lake: Option<PathBuf>,
    /// Upper bound of landing input per micro-batch, in megabytes; bounds memory.
    pub batch_mb: Option<u64>,
    /// Per rule id, the action to apply instead of the declared one.
    #[serde(default)]
    pub rules: BTreeMap<String, Action>,
    /// Cost anomaly thresholds.
    pub anomaly: Option<AnomalyConfig>,
    /// Serving on Cassandra; absent = the lake serves the queries.
    pub cassandra: Option<CassandraConfig>,
    /// The REST API and dashboard (`cloudlake serve`).
    pub api: Option<ApiConfig>,
    /// Streaming: trigger, allowed lateness, batch bounds (see `stream::StreamConfig`).
    pub stream: Option<StreamConfig>,
}

impl FileConfig {
    /// Reads `path`, or `./cloudlake.toml` when `path` is `None` and that file exists.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        if !path.exists() {
            return if required {
                Err(Error::Config(format!("config file {} not found", path.display())))
            } else {
                Ok(FileConfig::default())
            };
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))
    }
}

/// Resolved settings of one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Landing folder.
    pub landing: PathBuf,
    /// Lake root.
    pub lake: PathBuf,
    /// Micro-batch bound in bytes.
    pub batch_bytes: u64,
    /// Silver rule overrides and anomaly thresholds.
    pub silver: SilverSettings,
    /// Rebuild every gold mart even when only new events arrived (`run --full`).
    pub full_refresh: bool,
    /// Cassandra to publish to and query from, when configured.
    pub cassandra: Option<CassandraConfig>,
    /// The REST API's settings.
    pub api: ApiConfig,
    /// Streaming settings.
    pub stream: StreamSettings,
    /// Run silver and gold on the Ballista cluster of this scheduler (`df://host:port`).
    pub ballista: Option<String>,
}

impl Settings {
    /// Resolves settings: explicit values (flags or environment, already merged by the CLI) win
    /// over the config file, which wins over defaults.
    pub fn resolve(landing: Option<PathBuf>, lake: Option<PathBuf>, file: FileConfig) -> Result<Self> {
        let batch_mb = file.batch_mb.unwrap_or(DEFAULT_BATCH_MB);
        if batch_mb == 0 {
            return Err(Error::Config("batch_mb must be at least 1".into()));
        }
        let anomaly = file.anomaly.unwrap_or_default();
        anomaly.validate().map_err(Error::Config)?;
        let known: Vec<&str> =
            crate::silver::TABLES.iter().flat_map(|t| t.rules.iter().map(|r| r.id)).collect();
        if let Some(unknown) = file.rules.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::Config(format!(
                "[rules] names an unknown rule {unknown:?}; `cloudlake quality` lists the rule ids"
            )));
        }
        if let Some(c) = &file.cassandra {
            c.validate().map_err(Error::Config)?;
        }
        Ok(Settings {
            landing: landing.or(file.landing).unwrap_or_else(|| DEFAULT_LANDING.into()),
            lake: lake.or(file.lake).unwrap_or_else(|| DEFAULT_LAKE.into()),
            batch_bytes: batch_mb * 1024 * 1024,
            silver: SilverSettings { rule_actions: file.rules, anomaly, ..Default::default() },
            full_refresh: false,
            cassandra: file.cassandra,
            api: file.api.unwrap_or_default(),
            stream: file.stream.unwrap_or_default().resolve().map_err(Error::Config)?,
            ballista: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_which_wins_over_defaults() {
        let file = FileConfig { landing: Some("f/landing".into()), batch_mb: Some(8), ..Default::default() };
        let s = Settings::resolve(None, Some("flag/lake".into()), file).unwrap();
        assert_eq!(s.landing, PathBuf::from("f/landing"));
        assert_eq!(s.lake, PathBuf::from("flag/lake"));
        assert_eq!(s.batch_bytes, 8 * 1024 * 1024);
        let d = Settings::resolve(None, None, FileConfig::default()).unwrap();
        assert_eq!(d.lake, PathBuf::from(DEFAULT_LAKE));
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "lake = \"x\"\nlandnig = \"typo\"\n").unwrap();
        let err = FileConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("landnig"), "{err}");
    }

    #[test]
    fn rule_overrides_and_anomaly_thresholds_are_read_and_checked() {
        let file: FileConfig = toml::from_str(
            "[rules]\n\"usage_events.cost_not_negative\" = \"fail\"\n[anomaly]\nzscore_threshold = 2.5\n",
        )
        .unwrap();
        let s = Settings::resolve(None, None, file).unwrap();
        assert_eq!(s.silver.rule_actions["usage_events.cost_not_negative"], Action::Fail);
        assert_eq!(s.silver.anomaly.zscore_threshold, 2.5);
        assert_eq!(s.silver.anomaly.window_days, 28);
        let bad: FileConfig = toml::from_str("[rules]\n\"nope.rule\" = \"warn\"\n").unwrap();
        assert!(Settings::resolve(None, None, bad).unwrap_err().to_string().contains("nope.rule"));
        assert!(
            toml::from_str::<FileConfig>("[rules]\n\"usage_events.cost_not_negative\" = \"explode\"\n")
                .is_err()
        );
    }

    #[test]
    fn an_explicit_missing_config_file_is_an_error() {
        assert!(FileConfig::load(Some(Path::new("/nonexistent/cloudlake.toml"))).is_err());
    }
}
