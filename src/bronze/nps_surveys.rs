//! `nps_surveys`: organisation-level NPS (-100..100, not 0-10 answers) per survey date.
//! Natural key `(org_id, survey_date)`.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] =
    &[col("org_id", Utf8), col("survey_date", Date), col("nps_score", Float64), col("comment", Utf8)];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "nps_surveys",
    format: Format::Csv,
    columns: COLUMNS,
    key: &["org_id", "survey_date"],
    versioned: true,
    date_partition: None,
};
