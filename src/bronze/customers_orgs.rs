//! `customers_orgs`: organisations (tenants), the CRM master. Natural key `org_id`.
//!
//! Versioned: a changed record for the same org (a new plan tier in a later landing file) is a new
//! bronze row, so silver can keep the org as SCD type 2.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] = &[
    col("org_id", Utf8),
    col("org_name", Utf8),
    col("industry", Utf8),
    col("hq_region", Utf8),
    col("plan_tier", Utf8),
    col("is_enterprise", Bool),
    col("signup_date", Date),
    col("sales_rep", Utf8),
    col("lifecycle_stage", Utf8),
    col("marketing_source", Utf8),
    col("nps_score", Float64),
];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "customers_orgs",
    format: Format::Csv,
    columns: COLUMNS,
    key: &["org_id"],
    versioned: true,
    date_partition: None,
};
