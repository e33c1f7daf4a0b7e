//! `gold_cost_anomaly_mart` — grain (org_id, usage_date, service).
//!
//! Every scored day with its baseline, the three scores (z-score, MAD robust z, ratio to the
//! baseline's p99), each method's flag, how many flagged and the verdict. Thresholds are in the
//! `[anomaly]` config table; see `silver::anomalies` for the method.

use super::{Mart, Scope};

fn sql(daily: &str) -> String {
    format!(
        "SELECT org_id, usage_date, service, cost_usd, baseline_cost_usd, baseline_days,
            zscore, mad_score, pctl_ratio, zscore_flag, mad_flag, pctl_flag, methods_flagged, is_anomaly
        FROM {daily}"
    )
}

/// The mart.
pub const MART: Mart = Mart {
    name: "cost_anomaly_mart",
    grain: &["org_id", "usage_date", "service"],
    scope: Scope::Events,
    sql,
    partitions: &[],
};
