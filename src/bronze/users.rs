//! `users`: users of each organisation. Natural key `user_id`; versioned like every master.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] = &[
    col("user_id", Utf8),
    col("org_id", Utf8),
    col("email", Utf8),
    col("role", Utf8),
    col("active", Bool),
    col("created_at", Timestamp),
    col("last_login", Timestamp),
];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "users",
    format: Format::Csv,
    columns: COLUMNS,
    key: &["user_id"],
    versioned: true,
    date_partition: None,
};
