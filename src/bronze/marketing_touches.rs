//! `marketing_touches`: campaign touches per organisation. Natural key `touch_id`.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] = &[
    col("touch_id", Utf8),
    col("org_id", Utf8),
    col("campaign", Utf8),
    col("channel", Utf8),
    col("timestamp", Timestamp),
    col("clicked", Bool),
    col("converted", Bool),
];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "marketing_touches",
    format: Format::Csv,
    columns: COLUMNS,
    key: &["touch_id"],
    versioned: true,
    date_partition: None,
};
