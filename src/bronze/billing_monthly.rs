//! `billing_monthly`: one invoice per org and month, in USD, EUR or ARS with the exchange rate
//! to USD. Natural key `invoice_id`. Money is exact: Decimal128 with 6 fractional digits, the
//! rate with 10.

use super::{Format, Source};
use crate::landing::{ColType::*, Column, col};

const COLUMNS: &[Column] = &[
    col("invoice_id", Utf8),
    col("org_id", Utf8),
    col("month", Date),
    col("subtotal", Decimal(super::MONEY_SCALE)),
    col("credits", Decimal(super::MONEY_SCALE)),
    col("taxes", Decimal(super::MONEY_SCALE)),
    col("currency", Utf8),
    col("exchange_rate_to_usd", Decimal(super::RATE_SCALE)),
];

/// The source definition.
pub const SOURCE: Source = Source {
    name: "billing_monthly",
    format: Format::Csv,
    columns: COLUMNS,
    key: &["invoice_id"],
    versioned: true,
    date_partition: None,
};
