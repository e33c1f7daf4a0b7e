//! `gold_revenue_by_org_month` — grain (org_id, month).
//!
//! Monthly revenue in USD. `fx_rate_to_usd` is the rate applied (1.0 for USD whatever the feed
//! said; the invoice's own rate otherwise); `currency` is the invoices' currency. Every row
//! satisfies `revenue_usd = subtotal_usd - credits_usd + taxes_usd` exactly (silver rounds each
//! amount first, then sums).

use super::{Mart, Scope};

fn sql(_: &str) -> String {
    "SELECT b.org_id, b.month, max(o.org_name) AS org_name,
        CASE WHEN count(DISTINCT b.currency) = 1 THEN max(b.currency) ELSE 'MIXED' END AS currency,
        CASE WHEN count(DISTINCT b.fx_rate_to_usd) = 1 THEN max(b.fx_rate_to_usd) END AS fx_rate_to_usd,
        CAST(sum(b.subtotal_usd) AS DECIMAL(18, 6)) AS subtotal_usd,
        CAST(sum(b.credits_usd) AS DECIMAL(18, 6)) AS credits_usd,
        CAST(sum(b.taxes_usd) AS DECIMAL(18, 6)) AS taxes_usd,
        CAST(sum(b.revenue_usd) AS DECIMAL(18, 6)) AS revenue_usd,
        count(*) AS invoices
    FROM silver_billing_monthly b
    LEFT JOIN silver_customers_orgs o ON o.org_id = b.org_id AND o.is_current
    GROUP BY b.org_id, b.month"
        .to_string()
}

/// The mart.
pub const MART: Mart = Mart {
    name: "revenue_by_org_month",
    grain: &["org_id", "month"],
    scope: Scope::Batch,
    sql,
    partitions: &[],
};
