//! `silver_support_tickets`: the current version of each ticket, with its date, resolution time
//! and a CSAT that is only kept when it is a real 1..5 answer.

use super::SilverTable;
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "support_tickets.ticket_id_present",
        check: "ticket_id IS NOT NULL AND ticket_id <> ''",
        action: Quarantine,
        reason: "a ticket needs a ticket_id",
    },
    Rule {
        id: "support_tickets.org_exists",
        check: "__org_known",
        action: Quarantine,
        reason: "org_id is not in customers_orgs",
    },
    Rule {
        id: "support_tickets.created_at_present",
        check: "created_at IS NOT NULL",
        action: Quarantine,
        reason: "a ticket without created_at has no date",
    },
    Rule {
        id: "support_tickets.severity_known",
        check: "severity IN ('low','medium','high','critical')",
        action: Warn,
        reason: "severity is not low, medium, high or critical",
    },
    Rule {
        id: "support_tickets.csat_in_range",
        check: "csat_raw IS NULL OR csat_raw BETWEEN 1 AND 5",
        action: Warn,
        reason: "csat outside 1..5 (set to null)",
    },
    Rule {
        id: "support_tickets.resolved_after_created",
        check: "resolved_at IS NULL OR resolved_at >= created_at",
        action: Warn,
        reason: "resolved_at is before created_at (no resolution time)",
    },
];

fn select() -> String {
    format!(
        "SELECT {id} AS ticket_id, {org} AS org_id, lower(trim(t.category)) AS category, lower(trim(t.severity)) AS severity,
            t.created_at, t.resolved_at, CAST(t.created_at AS DATE) AS ticket_date,
            t.resolved_at IS NULL AS is_open,
            CASE WHEN t.resolved_at >= t.created_at
                 THEN (date_part('epoch', t.resolved_at) - date_part('epoch', t.created_at)) / 3600.0 END AS resolution_hours,
            CASE WHEN t.csat BETWEEN 1 AND 5 THEN t.csat END AS csat, t.csat AS csat_raw,
            t.sla_breached, t.source_file, t.source_line, t.record_hash,
            o.org_id IS NOT NULL AS __org_known
        FROM {current} t
        LEFT JOIN silver_orgs_current o ON o.org_id = {org}",
        id = super::conform::code("t.ticket_id"),
        org = super::conform::code("t.org_id"),
        current = super::current_version("bronze_support_tickets", "ticket_id"),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "support_tickets",
    bronze: "support_tickets",
    select,
    rules: RULES,
    partitions: &[],
    version_key: Some("lower(trim(ticket_id))"),
};
