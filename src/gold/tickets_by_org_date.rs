//! `gold_tickets_by_org_date` — grain (org_id, ticket_date, severity).
//!
//! Tickets opened per org, day and severity: how many, still open, SLA breaches and their rate,
//! average CSAT over valid answers (1..5) and how many, average resolution time in hours over
//! plausibly resolved tickets.

use super::{Mart, Scope};

fn sql(_: &str) -> String {
    "SELECT org_id, ticket_date, severity,
        count(*) AS tickets,
        count(*) FILTER (WHERE is_open) AS open_tickets,
        count(*) FILTER (WHERE sla_breached) AS sla_breaches,
        CAST(count(*) FILTER (WHERE sla_breached) AS DOUBLE) / count(*) AS sla_breach_rate,
        avg(CAST(csat AS DOUBLE)) AS avg_csat,
        count(csat) AS csat_responses,
        avg(resolution_hours) AS avg_resolution_hours
    FROM silver_support_tickets
    GROUP BY org_id, ticket_date, severity"
        .to_string()
}

/// The mart.
pub const MART: Mart = Mart {
    name: "tickets_by_org_date",
    grain: &["org_id", "ticket_date", "severity"],
    scope: Scope::Batch,
    sql,
    partitions: &[],
};
