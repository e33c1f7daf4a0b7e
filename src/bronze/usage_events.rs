//! `usage_events`: the live feed of metered usage, JSON Lines in `usage_events_stream/` (or a
//! Kafka topic carrying the same JSON). Natural key `event_id`, deduplicated across files,
//! replays and runs. Partitioned by `event_date`, the UTC date of `timestamp`.
//!
//! Schema versions: v1 has no `carbon_kg` nor `genai_tokens`; v2 adds both (tokens only for the
//! genai service). Both are declared here and null where absent; unknown fields of a future
//! version are kept in `extra_json`.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] = &[
    col("event_id", Utf8),
    col("timestamp", Timestamp),
    col("org_id", Utf8),
    col("resource_id", Utf8),
    col("service", Utf8),
    col("region", Utf8),
    col("metric", Utf8),
    col("value", Float64),
    col("unit", Utf8),
    col("cost_usd_increment", Decimal(super::MONEY_SCALE)),
    col("schema_version", Int64),
    col("carbon_kg", Float64),
    col("genai_tokens", Int64),
];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "usage_events",
    format: Format::Jsonl,
    columns: COLUMNS,
    key: &["event_id"],
    versioned: false,
    date_partition: Some(("timestamp", "event_date")),
};

/// Folder of the event files inside the landing folder.
pub const LANDING_DIR: &str = "usage_events_stream";
