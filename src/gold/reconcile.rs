//! Reconciliation: totals that must agree after every gold build (SPEC section 6).
//!
//! - cost: sum of `cost_usd` over `org_daily_usage_by_service` = sum of valid silver event
//!   costs, exactly (decimals compared as decimals);
//! - GenAI tokens: same for `genai_tokens`, and the GenAI mart's tokens = silver genai tokens;
//! - tickets: sum of `tickets` over `tickets_by_org_date` = silver tickets;
//! - revenue: `revenue_usd = subtotal_usd - credits_usd + taxes_usd` on every row, and the
//!   total equals silver's.
//!
//! A failed check is a bug in cloudlake (the marts are derived from silver), so the run fails.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::lake::{Lake, Layer};
use crate::{Error, Result};

/// One check and what it found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// What is compared.
    pub name: String,
    /// The silver side.
    pub expected: String,
    /// The gold side.
    pub actual: String,
}

impl Check {
    /// True when both sides agree.
    pub fn ok(&self) -> bool {
        self.expected == self.actual
    }
}

const CHECKS: &[(&str, &str, &str)] = &[
    (
        "cost_usd: org_daily_usage_by_service = silver_usage_events",
        "SELECT CAST(sum(cost_usd) AS VARCHAR) FROM silver_usage_events",
        "SELECT CAST(sum(cost_usd) AS VARCHAR) FROM gold_org_daily_usage_by_service",
    ),
    (
        "genai_tokens: org_daily_usage_by_service = silver_usage_events",
        "SELECT CAST(COALESCE(sum(genai_tokens), 0) AS VARCHAR) FROM silver_usage_events",
        "SELECT CAST(COALESCE(sum(genai_tokens), 0) AS VARCHAR) FROM gold_org_daily_usage_by_service",
    ),
    (
        "total_tokens: genai_tokens_by_org_date = silver genai events",
        "SELECT CAST(COALESCE(sum(genai_tokens), 0) AS VARCHAR) FROM silver_usage_events WHERE service = 'genai'",
        "SELECT CAST(COALESCE(sum(total_tokens), 0) AS VARCHAR) FROM gold_genai_tokens_by_org_date",
    ),
    (
        "events: org_daily_usage_by_service = silver_usage_events",
        "SELECT CAST(count(*) AS VARCHAR) FROM silver_usage_events",
        "SELECT CAST(COALESCE(sum(events), 0) AS VARCHAR) FROM gold_org_daily_usage_by_service",
    ),
    (
        "tickets: tickets_by_org_date = silver_support_tickets",
        "SELECT CAST(count(*) AS VARCHAR) FROM silver_support_tickets",
        "SELECT CAST(COALESCE(sum(tickets), 0) AS VARCHAR) FROM gold_tickets_by_org_date",
    ),
    (
        "revenue_usd: revenue_by_org_month = silver_billing_monthly",
        "SELECT CAST(CAST(sum(revenue_usd) AS DECIMAL(18, 6)) AS VARCHAR) FROM silver_billing_monthly",
        "SELECT CAST(sum(revenue_usd) AS VARCHAR) FROM gold_revenue_by_org_month",
    ),
    (
        "rows where revenue_usd <> subtotal_usd - credits_usd + taxes_usd",
        "SELECT '0'",
        "SELECT CAST(count(*) AS VARCHAR) FROM gold_revenue_by_org_month WHERE revenue_usd <> subtotal_usd - credits_usd + taxes_usd",
    ),
];

/// Runs every check against the committed gold tables; fails on the first disagreement.
pub async fn reconcile(ctx: &SessionContext, lake: &Lake) -> Result<Vec<Check>> {
    for mart in super::MARTS {
        lake.register(ctx, Layer::Gold, mart.name).await?;
    }
    let mut out = Vec::with_capacity(CHECKS.len());
    for (name, silver, gold) in CHECKS {
        let check = Check {
            name: name.to_string(),
            expected: scalar(ctx, silver).await?,
            actual: scalar(ctx, gold).await?,
        };
        if !check.ok() {
            return Err(Error::Internal(format!(
                "reconciliation failed: {}: silver says {}, gold says {}",
                check.name, check.expected, check.actual
            )));
        }
        out.push(check);
    }
    Ok(out)
}

async fn scalar(ctx: &SessionContext, sql: &str) -> Result<String> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let Some(b) = batches.first() else { return Ok(String::new()) };
    let c = cast(b.column(0), &DataType::Utf8)?;
    Ok(c.as_string::<i32>().iter().next().flatten().unwrap_or("").to_string())
}
