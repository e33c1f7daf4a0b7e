//! `silver_nps_surveys`: organisation-level NPS per survey date. The scores are NPS values
//! (-100..100), not 0-10 answers, so the range rule is -100..100.

use super::SilverTable;
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "nps_surveys.org_exists",
        check: "__org_known",
        action: Quarantine,
        reason: "org_id is not in customers_orgs",
    },
    Rule {
        id: "nps_surveys.survey_date_present",
        check: "survey_date IS NOT NULL",
        action: Quarantine,
        reason: "a survey needs a date",
    },
    Rule {
        id: "nps_surveys.nps_in_range",
        check: "nps_score IS NULL OR nps_score BETWEEN -100 AND 100",
        action: Quarantine,
        reason: "nps_score outside -100..100 is not an NPS",
    },
    Rule {
        id: "nps_surveys.nps_present",
        check: "nps_score IS NOT NULL",
        action: Warn,
        reason: "survey without a score",
    },
];

fn select() -> String {
    format!(
        "SELECT {org} AS org_id, s.survey_date, s.nps_score, trim(s.comment) AS comment,
            s.source_file, s.source_line, s.record_hash,
            o.org_id IS NOT NULL AS __org_known
        FROM (SELECT *, row_number() OVER (PARTITION BY {org0}, survey_date ORDER BY ingest_ts DESC, source_file DESC, source_line DESC) AS __rn
              FROM bronze_nps_surveys) s
        LEFT JOIN silver_orgs_current o ON o.org_id = {org}
        WHERE s.__rn = 1",
        org = super::conform::code("s.org_id"),
        org0 = super::conform::code("org_id"),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "nps_surveys",
    bronze: "nps_surveys",
    select,
    rules: RULES,
    partitions: &[],
    version_key: Some("lower(trim(org_id)), survey_date"),
};
