//! `silver_customers_orgs`: organisations as SCD type 2 (valid_from, valid_to, is_current).
//!
//! Each distinct bronze version of an org is a row. The first version ever ingested is valid from
//! the beginning of time; a later one from the date in its delivery file name
//! (`customers_orgs/2025-09-01.csv`) when it has one, else from when it was ingested. Versions are
//! then ordered by `valid_from` (ties by ingestion), and `valid_to` is the next version's
//! `valid_from` (exclusive), NULL for the current: the ranges never overlap, even when a
//! backdated delivery arrives late, so a range join finds exactly one version.

use super::SilverTable;
use super::conform;
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "customers_orgs.org_id_present",
        check: "org_id IS NOT NULL AND org_id <> ''",
        action: Quarantine,
        reason: "an organisation needs an org_id",
    },
    Rule {
        id: "customers_orgs.org_name_present",
        check: "org_name IS NOT NULL AND org_name <> ''",
        action: Warn,
        reason: "the organisation has no name",
    },
    Rule {
        id: "customers_orgs.hq_region_known",
        check: "hq_region IN ('us-east','us-west','eu-west','eu-central','ap-south','ap-northeast','sa-east')",
        action: Warn,
        reason: "hq_region is not a known region",
    },
    Rule {
        id: "customers_orgs.plan_tier_known",
        check: "plan_tier IN ('free','standard','pro','enterprise')",
        action: Warn,
        reason: "plan_tier is not a known tier",
    },
    Rule {
        id: "customers_orgs.plan_matches_enterprise",
        check: "is_enterprise IS NULL OR (plan_tier = 'enterprise') = is_enterprise",
        action: Warn,
        reason: "is_enterprise disagrees with plan_tier (plan_tier is used)",
    },
    Rule {
        id: "customers_orgs.nps_in_range",
        check: "nps_score_raw IS NULL OR nps_score_raw BETWEEN -100 AND 100",
        action: Warn,
        reason: "nps_score outside -100..100 (set to null)",
    },
    Rule {
        id: "customers_orgs.signup_not_in_future",
        check: "signup_date IS NULL OR signup_date <= current_date()",
        action: Warn,
        reason: "signup_date is in the future",
    },
];

fn select() -> String {
    format!(
        "WITH raw AS (
            SELECT *,
                row_number() OVER (PARTITION BY {org_id} ORDER BY ingest_ts, source_file, source_line) AS __ingest_order
            FROM bronze_customers_orgs),
        v AS (
            SELECT
                {org_id} AS org_id,
                trim(org_name) AS org_name,
                trim(industry) AS industry,
                {region} AS hq_region,
                lower(trim(plan_tier)) AS plan_tier,
                is_enterprise,
                signup_date,
                lower(trim(sales_rep)) AS sales_rep,
                lower(trim(lifecycle_stage)) AS lifecycle_stage,
                lower(trim(marketing_source)) AS marketing_source,
                CASE WHEN nps_score BETWEEN -100 AND 100 THEN nps_score END AS nps_score,
                nps_score AS nps_score_raw,
                CASE WHEN __ingest_order = 1 THEN arrow_cast(TIMESTAMP '1970-01-01T00:00:00', 'Timestamp(µs, \"UTC\")')
                     ELSE COALESCE(to_timestamp_micros(regexp_match(source_file, '(\\d{{4}}-\\d{{2}}-\\d{{2}})')[1]), ingest_ts) END AS valid_from,
                ingest_ts, source_file, source_line, record_hash
            FROM raw)
        SELECT org_id, org_name, industry, hq_region, plan_tier, is_enterprise, signup_date, sales_rep,
            lifecycle_stage, marketing_source, nps_score, nps_score_raw,
            row_number() OVER (PARTITION BY org_id ORDER BY valid_from, ingest_ts, source_file, source_line) AS version,
            valid_from,
            lead(valid_from) OVER (PARTITION BY org_id ORDER BY valid_from, ingest_ts, source_file, source_line) AS valid_to,
            lead(valid_from) OVER (PARTITION BY org_id ORDER BY valid_from, ingest_ts, source_file, source_line) IS NULL AS is_current,
            source_file, source_line, record_hash
        FROM v",
        org_id = conform::code("org_id"),
        region = conform::region("hq_region"),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "customers_orgs",
    bronze: "customers_orgs",
    select,
    rules: RULES,
    partitions: &[],
    version_key: None,
};
