//! `support_tickets`: support tickets. Natural key `ticket_id`; a ticket updated in a later
//! landing file (resolved, rated) is a new version.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] = &[
    col("ticket_id", Utf8),
    col("org_id", Utf8),
    col("category", Utf8),
    col("severity", Utf8),
    col("created_at", Timestamp),
    col("resolved_at", Timestamp),
    col("csat", Int64),
    col("sla_breached", Bool),
];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "support_tickets",
    format: Format::Csv,
    columns: COLUMNS,
    key: &["ticket_id"],
    versioned: true,
    date_partition: None,
};
