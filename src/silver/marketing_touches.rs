//! `silver_marketing_touches`: the current version of each campaign touch.

use super::SilverTable;
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "marketing_touches.touch_id_present",
        check: "touch_id IS NOT NULL AND touch_id <> ''",
        action: Quarantine,
        reason: "a touch needs a touch_id",
    },
    Rule {
        id: "marketing_touches.org_exists",
        check: "__org_known",
        action: Quarantine,
        reason: "org_id is not in customers_orgs",
    },
    Rule {
        id: "marketing_touches.converted_implies_clicked",
        check: "converted IS NOT TRUE OR clicked IS TRUE",
        action: Warn,
        reason: "converted without a click",
    },
];

fn select() -> String {
    format!(
        "SELECT {id} AS touch_id, {org} AS org_id, lower(trim(m.campaign)) AS campaign, lower(trim(m.channel)) AS channel,
            m.timestamp AS touch_ts, m.clicked, m.converted, m.source_file, m.source_line, m.record_hash,
            o.org_id IS NOT NULL AS __org_known
        FROM {current} m
        LEFT JOIN silver_orgs_current o ON o.org_id = {org}",
        id = super::conform::code("m.touch_id"),
        org = super::conform::code("m.org_id"),
        current = super::current_version("bronze_marketing_touches", "touch_id"),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "marketing_touches",
    bronze: "marketing_touches",
    select,
    rules: RULES,
    partitions: &[],
    version_key: Some("lower(trim(touch_id))"),
};
