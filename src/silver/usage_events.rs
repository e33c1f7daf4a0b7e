//! `silver_usage_events`: conformed, validated, enriched usage events, partitioned by
//! `usage_date` (UTC date of the event).
//!
//! - codes conformed: service, region, metric and unit through the alias tables;
//! - `value` is a number whatever its JSON type (bronze cast it); a missing `unit` is imputed
//!   from the metric (`unit_imputed` says so, and the run counts it);
//! - schema versions harmonised: v1 and v2 in one table, `carbon_kg` and `genai_tokens` typed and
//!   null for v1; an unknown version is quarantined;
//! - enriched with the org version valid at the event's time (SCD2 join) and the resource.

use super::SilverTable;
use super::conform::{self, METRIC_UNITS, REGIONS, SERVICES};
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order (the first violated quarantine rule is recorded).
pub const RULES: &[Rule] = &[
    Rule {
        id: "usage_events.event_id_present",
        check: "event_id IS NOT NULL AND event_id <> ''",
        action: Quarantine,
        reason: "an event needs an event_id (uniqueness: bronze keeps one row per event_id)",
    },
    Rule {
        id: "usage_events.timestamp_valid",
        check: "event_ts IS NOT NULL AND event_ts >= TIMESTAMP '2000-01-01T00:00:00Z' AND event_ts < now() + INTERVAL '1 day'",
        action: Quarantine,
        reason: "timestamp missing, unparseable or implausible",
    },
    Rule {
        id: "usage_events.schema_version_known",
        check: "schema_version IN (1, 2)",
        action: Quarantine,
        reason: "unknown schema_version: this build reads versions 1 and 2",
    },
    Rule {
        id: "usage_events.cost_present",
        check: "cost_usd IS NOT NULL",
        action: Quarantine,
        reason: "cost_usd_increment missing or not a number",
    },
    Rule {
        id: "usage_events.cost_not_negative",
        check: "cost_usd >= -0.01",
        action: Quarantine,
        reason: "cost_usd_increment below -0.01 is not a rounding credit",
    },
    Rule {
        id: "usage_events.value_in_range",
        check: "(value IS NULL OR abs(value) < 1e9) AND (carbon_kg IS NULL OR abs(carbon_kg) < 1e9)",
        action: Quarantine,
        reason: "value or carbon_kg beyond 1e9 is not a plausible measurement",
    },
    Rule {
        id: "usage_events.org_exists",
        check: "__org_known",
        action: Quarantine,
        reason: "org_id is not in customers_orgs",
    },
    Rule {
        id: "usage_events.resource_exists",
        check: "__resource_known",
        action: Quarantine,
        reason: "resource_id is not in resources",
    },
    Rule {
        id: "usage_events.unit_present",
        check: "value IS NULL OR unit IS NOT NULL",
        action: Warn,
        reason: "a value without a unit, and the metric implies none",
    },
    Rule {
        id: "usage_events.service_known",
        check: "__service_known",
        action: Warn,
        reason: "service is not a known service (kept as written, normalised)",
    },
    Rule {
        id: "usage_events.region_known",
        check: "__region_known",
        action: Warn,
        reason: "region is not a known region (kept as written, normalised)",
    },
    Rule {
        id: "usage_events.metric_known",
        check: "__metric_known",
        action: Warn,
        reason: "metric is not a known metric",
    },
    Rule {
        id: "usage_events.value_not_negative",
        check: "value IS NULL OR value >= 0",
        action: Warn,
        reason: "negative usage value",
    },
    Rule {
        id: "usage_events.after_resource_created",
        check: "resource_created_at IS NULL OR event_ts >= resource_created_at",
        action: Warn,
        reason: "event dated before its resource's created_at",
    },
    Rule {
        id: "usage_events.resource_org_matches",
        check: "resource_org_id IS NULL OR resource_org_id = org_id",
        action: Warn,
        reason: "the resource belongs to another org",
    },
    Rule {
        id: "usage_events.genai_tokens_for_genai",
        check: "genai_tokens IS NULL OR service = 'genai'",
        action: Warn,
        reason: "genai_tokens on a non-genai service",
    },
];

fn select() -> String {
    let service = conform::service("e.service");
    let region = conform::region("e.region");
    let metric = conform::metric("e.metric");
    let metrics: Vec<&str> = METRIC_UNITS.iter().map(|(m, _)| *m).collect();
    format!(
        "SELECT e.event_id, e.timestamp AS event_ts, CAST(e.timestamp AS DATE) AS usage_date,
            {org} AS org_id, {res} AS resource_id,
            {service} AS service, {region} AS region, {metric} AS metric,
            e.value,
            COALESCE({unit}, {implied}) AS unit,
            e.unit IS NULL AND e.value IS NOT NULL AND {implied} IS NOT NULL AS unit_imputed,
            e.cost_usd_increment AS cost_usd,
            e.schema_version,
            CASE WHEN e.schema_version >= 2 THEN e.carbon_kg END AS carbon_kg,
            CASE WHEN e.schema_version >= 2 THEN e.genai_tokens END AS genai_tokens,
            o.org_name, o.industry, o.plan_tier, o.hq_region,
            r.service AS resource_service, r.region AS resource_region, r.state AS resource_state,
            r.created_at AS resource_created_at, r.org_id AS resource_org_id,
            e.extra_json, e.run_id AS ingest_run_id, e.source_file, e.source_line, e.record_hash,
            o.org_id IS NOT NULL AS __org_known, r.resource_id IS NOT NULL AS __resource_known,
            {service_known} AS __service_known, {region_known} AS __region_known, {metric_known} AS __metric_known
        FROM bronze_usage_events e
        LEFT JOIN silver_customers_orgs o
            ON o.org_id = {org} AND e.timestamp >= o.valid_from AND (o.valid_to IS NULL OR e.timestamp < o.valid_to)
        LEFT JOIN silver_resources r ON r.resource_id = {res}",
        org = conform::code("e.org_id"),
        res = conform::code("e.resource_id"),
        unit = conform::unit("e.unit"),
        implied = conform::unit_of_metric(&metric),
        service_known = conform::known(&service, SERVICES),
        region_known = conform::known(&region, REGIONS),
        metric_known = conform::known(&metric, &metrics),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "usage_events",
    bronze: "usage_events",
    select,
    rules: RULES,
    partitions: &["usage_date"],
    version_key: None,
};
