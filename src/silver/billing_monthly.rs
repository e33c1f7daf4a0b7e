//! `silver_billing_monthly`: invoices converted to USD with the rate actually applied.
//!
//! FX policy: a USD invoice converts at exactly 1.0 whatever rate the feed carries (the reported
//! rate is kept in `fx_rate_reported` and the row flagged); other currencies convert at their
//! reported rate. Missing credits are 0 (flagged `credits_imputed`). Every USD amount is rounded
//! to 6 decimals first (half away from zero, Arrow's decimal cast), and `revenue_usd = subtotal_usd - credits_usd + taxes_usd` exactly.
//! Negative subtotals are kept (credit notes and adjustments are revenue corrections) and flagged.

use super::SilverTable;
use super::conform::{self, CURRENCIES};
use super::rules::{Action::*, Rule};

/// Quality rules, applied in this order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "billing_monthly.invoice_id_present",
        check: "invoice_id IS NOT NULL AND invoice_id <> ''",
        action: Quarantine,
        reason: "an invoice needs an invoice_id",
    },
    Rule {
        id: "billing_monthly.org_exists",
        check: "__org_known",
        action: Quarantine,
        reason: "org_id is not in customers_orgs",
    },
    Rule {
        id: "billing_monthly.month_present",
        check: "month IS NOT NULL",
        action: Quarantine,
        reason: "an invoice needs a month",
    },
    Rule {
        id: "billing_monthly.currency_known",
        check: "__currency_known",
        action: Quarantine,
        reason: "currency is not one we can convert (USD, EUR, ARS)",
    },
    Rule {
        id: "billing_monthly.amounts_present",
        check: "subtotal IS NOT NULL AND taxes IS NOT NULL",
        action: Quarantine,
        reason: "subtotal or taxes missing",
    },
    Rule {
        id: "billing_monthly.usd_amounts_in_range",
        check: "subtotal_usd IS NOT NULL AND credits_usd IS NOT NULL AND taxes_usd IS NOT NULL AND revenue_usd IS NOT NULL",
        action: Quarantine,
        reason: "an amount in USD does not fit 12 digits before the decimal point",
    },
    Rule {
        id: "billing_monthly.fx_rate_positive",
        check: "fx_rate_reported > 0",
        action: Quarantine,
        reason: "exchange rate must be positive",
    },
    Rule {
        id: "billing_monthly.usd_rate_is_one",
        check: "currency <> 'USD' OR fx_rate_reported = 1",
        action: Warn,
        reason: "a USD invoice carries a rate other than 1.0 (1.0 applied)",
    },
    Rule {
        id: "billing_monthly.subtotal_not_negative",
        check: "subtotal >= 0",
        action: Warn,
        reason: "negative subtotal (kept as an adjustment)",
    },
    Rule {
        id: "billing_monthly.credits_not_negative",
        check: "credits >= 0",
        action: Warn,
        reason: "negative credits",
    },
];

fn select() -> String {
    let currency = conform::currency("b.currency");
    // TRY_CAST: an amount too large for DECIMAL(18, 6) becomes NULL and is quarantined below.
    let money = |e: &str| format!("TRY_CAST({e} AS DECIMAL(18, 6))");
    format!(
        "WITH c AS (
            SELECT {id} AS invoice_id, {org} AS org_id, CAST(date_trunc('month', b.month) AS DATE) AS month,
                {currency} AS currency, b.subtotal, COALESCE(b.credits, CAST(0 AS DECIMAL(18, 6))) AS credits,
                b.credits IS NULL AS credits_imputed, b.taxes,
                b.exchange_rate_to_usd AS fx_rate_reported,
                CASE WHEN {currency} = 'USD' THEN CAST(1 AS DECIMAL(18, 10)) ELSE b.exchange_rate_to_usd END AS fx_rate_to_usd,
                b.source_file, b.source_line, b.record_hash,
                o.org_id IS NOT NULL AS __org_known, {currency_known} AS __currency_known
            FROM {current} b
            LEFT JOIN silver_orgs_current o ON o.org_id = {org})
        SELECT invoice_id, org_id, month, currency, subtotal, credits, credits_imputed, taxes, fx_rate_reported, fx_rate_to_usd,
            {subtotal_usd} AS subtotal_usd, {credits_usd} AS credits_usd, {taxes_usd} AS taxes_usd,
            {subtotal_usd} - {credits_usd} + {taxes_usd} AS revenue_usd,
            source_file, source_line, record_hash, __org_known, __currency_known
        FROM c",
        id = conform::code("b.invoice_id"),
        org = conform::code("b.org_id"),
        currency_known = conform::known(&currency, CURRENCIES),
        current = super::current_version("bronze_billing_monthly", "invoice_id"),
        subtotal_usd = money("subtotal * fx_rate_to_usd"),
        credits_usd = money("credits * fx_rate_to_usd"),
        taxes_usd = money("taxes * fx_rate_to_usd"),
    )
}

/// The table definition.
pub const TABLE: SilverTable = SilverTable {
    name: "billing_monthly",
    bronze: "billing_monthly",
    select,
    rules: RULES,
    partitions: &[],
    version_key: Some("lower(trim(invoice_id))"),
};
