//! `gold_org_daily_usage_by_service` — grain (org_id, usage_date, service).
//!
//! Daily usage and cost per org and service, with the org's attributes as of that day (the SCD2
//! version valid at the day's start) and `anomalous_events`: the day's events when the day is a
//! cost anomaly (silver's three-method scoring), else 0. Reconciles: the sum of `cost_usd`
//! equals the sum of valid silver event costs exactly.

use super::{Mart, Scope};

fn sql(daily: &str) -> String {
    format!(
        "SELECT d.org_id, d.usage_date, d.service,
            o.org_name, o.industry, o.plan_tier,
            d.cost_usd, d.requests, d.cpu_hours, d.storage_gb_hours, d.genai_tokens, d.carbon_kg, d.events,
            CASE WHEN d.is_anomaly THEN d.events ELSE 0 END AS anomalous_events
        FROM {daily} d
        LEFT JOIN silver_customers_orgs o
            ON o.org_id = d.org_id
           AND arrow_cast(d.usage_date, 'Timestamp(µs, \"UTC\")') >= o.valid_from
           AND (o.valid_to IS NULL OR arrow_cast(d.usage_date, 'Timestamp(µs, \"UTC\")') < o.valid_to)"
    )
}

/// The mart.
pub const MART: Mart = Mart {
    name: "org_daily_usage_by_service",
    grain: &["org_id", "usage_date", "service"],
    scope: Scope::Events,
    sql,
    partitions: &[],
};
