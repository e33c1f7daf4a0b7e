//! `resources`: cloud resources (VMs, databases, buckets...). Natural key `resource_id`.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] = &[
    col("resource_id", Utf8),
    col("org_id", Utf8),
    col("service", Utf8),
    col("region", Utf8),
    col("created_at", Timestamp),
    col("state", Utf8),
    col("tags_json", Utf8),
];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "resources",
    format: Format::Csv,
    columns: COLUMNS,
    key: &["resource_id"],
    versioned: true,
    date_partition: None,
};
