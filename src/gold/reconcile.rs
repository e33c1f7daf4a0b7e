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
use indexmap::{IndexMap, IndexSet};
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

/// One side of a check: an aggregate over a table, or a constant (no table).
type Side = (Option<&'static str>, &'static str);

/// Each check: its name, the silver side (expected) and the gold side (actual). The aggregates
/// over one table are computed in one query (a scan of the table, not one per check).
const CHECKS: &[(&str, Side, Side)] = &[
    (
        "cost_usd: org_daily_usage_by_service = silver_usage_events",
        (Some("silver_usage_events"), "CAST(sum(cost_usd) AS VARCHAR)"),
        (Some("gold_org_daily_usage_by_service"), "CAST(sum(cost_usd) AS VARCHAR)"),
    ),
    (
        "genai_tokens: org_daily_usage_by_service = silver_usage_events",
        (Some("silver_usage_events"), "CAST(COALESCE(sum(genai_tokens), 0) AS VARCHAR)"),
        (Some("gold_org_daily_usage_by_service"), "CAST(COALESCE(sum(genai_tokens), 0) AS VARCHAR)"),
    ),
    (
        "total_tokens: genai_tokens_by_org_date = silver genai events",
        (
            Some("silver_usage_events"),
            "CAST(COALESCE(sum(genai_tokens) FILTER (WHERE service = 'genai'), 0) AS VARCHAR)",
        ),
        (Some("gold_genai_tokens_by_org_date"), "CAST(COALESCE(sum(total_tokens), 0) AS VARCHAR)"),
    ),
    (
        "events: org_daily_usage_by_service = silver_usage_events",
        (Some("silver_usage_events"), "CAST(count(*) AS VARCHAR)"),
        (Some("gold_org_daily_usage_by_service"), "CAST(COALESCE(sum(events), 0) AS VARCHAR)"),
    ),
    (
        "tickets: tickets_by_org_date = silver_support_tickets",
        (Some("silver_support_tickets"), "CAST(count(*) AS VARCHAR)"),
        (Some("gold_tickets_by_org_date"), "CAST(COALESCE(sum(tickets), 0) AS VARCHAR)"),
    ),
    (
        "revenue_usd: revenue_by_org_month = silver_billing_monthly",
        (Some("silver_billing_monthly"), "CAST(CAST(sum(revenue_usd) AS DECIMAL(18, 6)) AS VARCHAR)"),
        (Some("gold_revenue_by_org_month"), "CAST(sum(revenue_usd) AS VARCHAR)"),
    ),
    (
        "rows where revenue_usd <> subtotal_usd - credits_usd + taxes_usd",
        (None, "0"),
        (
            Some("gold_revenue_by_org_month"),
            "CAST(count(*) FILTER (WHERE revenue_usd <> subtotal_usd - credits_usd + taxes_usd) AS VARCHAR)",
        ),
    ),
];

/// Runs every check against the committed gold tables; fails on the first disagreement.
pub async fn reconcile(ctx: &SessionContext, lake: &Lake) -> Result<Vec<Check>> {
    for mart in super::MARTS {
        lake.register(ctx, Layer::Gold, mart.name).await?;
    }
    // Per table, its aggregates (each once), then one query per table, two at a time.
    let mut tables: IndexMap<&str, IndexSet<&str>> = IndexMap::new();
    for (table, expr) in CHECKS.iter().flat_map(|(_, silver, gold)| [silver, gold]) {
        if let Some(table) = table {
            tables.entry(table).or_default().insert(expr);
        }
    }
    use futures::{StreamExt, TryStreamExt};
    let values: Vec<Vec<String>> = futures::stream::iter(&tables)
        .map(|(table, exprs)| {
            row(ctx, format!("SELECT {} FROM {table}", exprs.iter().copied().collect::<Vec<_>>().join(", ")))
        })
        .buffered(2)
        .try_collect()
        .await?;
    let value = |(table, expr): &Side| -> String {
        let Some(table) = table else { return expr.to_string() };
        let found = tables.get_full(table).and_then(|(i, _, exprs)| values[i].get(exprs.get_index_of(expr)?));
        found.cloned().unwrap_or_default()
    };
    let mut out = Vec::with_capacity(CHECKS.len());
    for (name, silver, gold) in CHECKS {
        let check = Check { name: name.to_string(), expected: value(silver), actual: value(gold) };
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

/// The first row of `sql`'s result, every column as text (empty when null).
async fn row(ctx: &SessionContext, sql: String) -> Result<Vec<String>> {
    let batches = ctx.sql(&sql).await?.collect().await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(Vec::new()) };
    b.columns()
        .iter()
        .map(|c| {
            let c = cast(c, &DataType::Utf8)?;
            Ok(c.as_string::<i32>().iter().next().flatten().unwrap_or("").to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers the rows of `sql` in `ctx` as `name`.
    async fn table(ctx: &SessionContext, name: &str, sql: &str) {
        let df = ctx.sql(sql).await.unwrap();
        ctx.register_table(name, df.into_view()).unwrap();
    }

    async fn tables(ctx: &SessionContext, gold_tokens: i64) {
        table(
            ctx,
            "silver_usage_events",
            "SELECT * FROM (VALUES (CAST(1.5 AS DECIMAL(18, 6)), 10, 'genai'), (CAST(2.25 AS DECIMAL(18, 6)), 5, 'compute'))
             AS t(cost_usd, genai_tokens, service)",
        )
        .await;
        table(
            ctx,
            "gold_org_daily_usage_by_service",
            "SELECT * FROM (VALUES (CAST(3.75 AS DECIMAL(18, 6)), 15, 2)) AS t(cost_usd, genai_tokens, events)",
        )
        .await;
        table(
            ctx,
            "gold_genai_tokens_by_org_date",
            &format!("SELECT * FROM (VALUES ({gold_tokens})) AS t(total_tokens)"),
        )
        .await;
        table(ctx, "silver_support_tickets", "SELECT * FROM (VALUES (1), (2), (3)) AS t(id)").await;
        table(ctx, "gold_tickets_by_org_date", "SELECT * FROM (VALUES (1), (2)) AS t(tickets)").await;
        table(
            ctx,
            "silver_billing_monthly",
            "SELECT * FROM (VALUES (CAST(7 AS DECIMAL(18, 6)))) AS t(revenue_usd)",
        )
        .await;
        table(
            ctx,
            "gold_revenue_by_org_month",
            "SELECT * FROM (VALUES (CAST(7 AS DECIMAL(18, 6)), CAST(8 AS DECIMAL(18, 6)), CAST(2 AS DECIMAL(18, 6)), CAST(1 AS DECIMAL(18, 6))))
             AS t(revenue_usd, subtotal_usd, credits_usd, taxes_usd)",
        )
        .await;
    }

    #[tokio::test]
    async fn checks_compare_their_own_aggregates_and_a_disagreement_fails() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let ctx = SessionContext::new();
        tables(&ctx, 10).await;
        let checks = reconcile(&ctx, &lake).await.unwrap();
        let found: Vec<(&str, &str)> =
            checks.iter().map(|c| (c.expected.as_str(), c.actual.as_str())).collect();
        assert_eq!(
            found,
            vec![
                ("3.750000", "3.750000"),
                ("15", "15"),
                ("10", "10"),
                ("2", "2"),
                ("3", "3"),
                ("7.000000", "7.000000"),
                ("0", "0"),
            ]
        );

        // Gold's GenAI tokens disagree with silver's genai events (10): one clear sentence.
        let ctx = SessionContext::new();
        tables(&ctx, 11).await;
        let e = reconcile(&ctx, &lake).await.unwrap_err().to_string();
        assert!(e.contains("total_tokens") && e.contains("silver says 10, gold says 11"), "{e}");
    }
}
