//! `silver_resources`: the current version of each cloud resource, service and region conformed.

use super::SilverTable;
use super::conform::{self, REGIONS, SERVICES};
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "resources.resource_id_present",
        check: "resource_id IS NOT NULL AND resource_id <> ''",
        action: Quarantine,
        reason: "a resource needs a resource_id",
    },
    Rule {
        id: "resources.org_exists",
        check: "__org_known",
        action: Quarantine,
        reason: "org_id is not in customers_orgs",
    },
    Rule {
        id: "resources.service_known",
        check: "__service_known",
        action: Warn,
        reason: "service is not a known service (kept as written, normalised)",
    },
    Rule {
        id: "resources.region_known",
        check: "__region_known",
        action: Warn,
        reason: "region is not a known region (kept as written, normalised)",
    },
    Rule {
        id: "resources.created_at_present",
        check: "created_at IS NOT NULL",
        action: Warn,
        reason: "created_at is missing",
    },
];

fn select() -> String {
    let service = conform::service("r.service");
    let region = conform::region("r.region");
    format!(
        "SELECT {id} AS resource_id, {org} AS org_id, {service} AS service, {region} AS region, r.created_at,
            lower(trim(r.state)) AS state, r.tags_json, r.source_file, r.source_line, r.record_hash,
            o.org_id IS NOT NULL AS __org_known,
            {service_known} AS __service_known, {region_known} AS __region_known
        FROM {current} r
        LEFT JOIN silver_orgs_current o ON o.org_id = {org}",
        id = conform::code("r.resource_id"),
        org = conform::code("r.org_id"),
        service_known = conform::known(&service, SERVICES),
        region_known = conform::known(&region, REGIONS),
        current = super::current_version("bronze_resources", "resource_id"),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "resources",
    bronze: "resources",
    select,
    rules: RULES,
    partitions: &[],
    version_key: Some("lower(trim(resource_id))"),
};
