//! The five queries answered from the gold marts in the lake (the embedded default).
//!
//! Parameters are bound as placeholders (`$1`, ...), never spliced into SQL text.

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Date32Type;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use super::queries::{
    CRITICAL_TICKETS_DAYS, DEFAULT_TOP, QueryName, QueryParams, TOP_SERVICES_DAYS, output_schema,
};
use super::views::{ALL_ORGS, CRITICAL_TICKETS_BY_DAY, GENAI_TOKENS_BY_DAY, GOLD_MARTS, REVENUE_BY_MONTH};
use crate::lake::{Lake, Layer};
use crate::{Error, Result};

/// Registers the gold `marts` in `ctx`; a clear error naming the first one missing.
pub async fn register_marts(lake: &Lake, ctx: &SessionContext, marts: &[&str]) -> Result<()> {
    for mart in marts {
        if !lake.register(ctx, Layer::Gold, mart).await? {
            return Err(Error::Usage(format!(
                "gold mart {mart} not found in {}; run `cloudlake run` first",
                lake.location()
            )));
        }
    }
    Ok(())
}

/// Answers `name` from the lake.
pub async fn query(lake: &Lake, name: QueryName, params: &QueryParams) -> Result<Vec<RecordBatch>> {
    params.validate(name)?;
    let ctx = crate::lake::session();
    // Only the marts this query reads (each one is a Delta log to open): org_health for the
    // org check, the daily mart for the reference date.
    let marts: &[&str] = match name {
        QueryName::DailyUsage | QueryName::TopServices => &["org_health", "org_daily_usage_by_service"],
        QueryName::CriticalTickets => &["org_health", "org_daily_usage_by_service", "tickets_by_org_date"],
        QueryName::Revenue => &["org_health", "org_daily_usage_by_service", "revenue_by_org_month"],
        QueryName::GenaiTokens => &["org_health", "org_daily_usage_by_service", "genai_tokens_by_org_date"],
        QueryName::Anomalies => &["org_health", "org_daily_usage_by_service", "cost_anomaly_mart"],
    };
    debug_assert!(marts.iter().all(|m| GOLD_MARTS.contains(m)));
    register_marts(lake, &ctx, marts).await?;
    if let Some(org) = &params.org
        && run(&ctx, "SELECT org_id FROM gold_org_health WHERE org_id = $1", vec![text(org)])
            .await?
            .iter()
            .all(|b| b.num_rows() == 0)
    {
        return Err(Error::Usage(format!("unknown org {org:?}")));
    }
    let reference = match params.to {
        Some(d) => Some(d),
        None => latest_usage_date(&ctx).await?,
    };
    let scope = text(params.org.as_deref().unwrap_or(ALL_ORGS));
    let org = params.org.as_deref().map(text).unwrap_or(ScalarValue::Utf8(None));
    let (from, to) = (date(params.from), date(params.to));
    let window = |days: i64| {
        let end = reference.unwrap_or_default();
        (date(reference.map(|_| end - chrono::Days::new(days as u64 - 1))), date(reference))
    };
    let batches = match name {
        QueryName::DailyUsage => {
            run(
                &ctx,
                "SELECT usage_date, service, cost_usd, requests FROM gold_org_daily_usage_by_service
                 WHERE org_id = $1 AND ($2 IS NULL OR service = $2)
                   AND ($3 IS NULL OR usage_date >= $3) AND ($4 IS NULL OR usage_date <= $4)
                 ORDER BY usage_date, service",
                vec![org, params.service.as_deref().map(text).unwrap_or(ScalarValue::Utf8(None)), from, to],
            )
            .await?
        }
        QueryName::TopServices => {
            let (first, last) = window(TOP_SERVICES_DAYS);
            run(
                &ctx,
                "SELECT row_number() OVER (ORDER BY sum(cost_usd) DESC, service) AS rank, service,
                        CAST(sum(cost_usd) AS DECIMAL(18, 6)) AS cost_usd, CAST(sum(requests) AS DECIMAL(18, 6)) AS requests
                 FROM gold_org_daily_usage_by_service
                 WHERE org_id = $1 AND usage_date >= $2 AND usage_date <= $3
                 GROUP BY service ORDER BY rank LIMIT $4",
                vec![org, first, last, ScalarValue::Int64(Some(params.top.unwrap_or(DEFAULT_TOP) as i64))],
            )
            .await?
        }
        QueryName::CriticalTickets => {
            let (first, last) = window(CRITICAL_TICKETS_DAYS);
            let sql = format!(
                "SELECT ticket_date, critical_tickets, sla_breaches, sla_breach_rate FROM ({CRITICAL_TICKETS_BY_DAY})
                 WHERE scope = $1 AND ticket_date >= $2 AND ticket_date <= $3 ORDER BY ticket_date"
            );
            run(&ctx, &sql, vec![scope, first, last]).await?
        }
        QueryName::Revenue => {
            let sql = format!(
                "SELECT month, subtotal_usd, credits_usd, taxes_usd, revenue_usd, invoices FROM ({REVENUE_BY_MONTH})
                 WHERE scope = $1 AND ($2 IS NULL OR month >= $2) AND ($3 IS NULL OR month <= $3) ORDER BY month"
            );
            run(&ctx, &sql, vec![scope, date(params.from.map(first_of_month)), to]).await?
        }
        QueryName::GenaiTokens => {
            let sql = format!(
                "SELECT usage_date, total_tokens, genai_cost_usd, cost_per_million_tokens FROM ({GENAI_TOKENS_BY_DAY})
                 WHERE scope = $1 AND ($2 IS NULL OR usage_date >= $2) AND ($3 IS NULL OR usage_date <= $3) ORDER BY usage_date"
            );
            run(&ctx, &sql, vec![scope, from, to]).await?
        }
        QueryName::Anomalies => {
            run(
                &ctx,
                "SELECT usage_date, service, cost_usd, baseline_cost_usd, zscore, methods_flagged FROM gold_cost_anomaly_mart
                 WHERE org_id = $1 AND is_anomaly AND ($2 IS NULL OR usage_date >= $2) AND ($3 IS NULL OR usage_date <= $3)
                 ORDER BY usage_date, service",
                vec![org, from, to],
            )
            .await?
        }
    };
    super::conform(batches, &output_schema(name))
}

/// Every org (id, name, industry, plan tier), by name: the dashboard's picker.
pub async fn orgs(lake: &Lake) -> Result<Vec<RecordBatch>> {
    let ctx = crate::lake::session();
    register_marts(lake, &ctx, &["org_health"]).await?;
    let batches = run(
        &ctx,
        "SELECT org_id, org_name, industry, plan_tier FROM gold_org_health ORDER BY org_name, org_id",
        vec![],
    )
    .await?;
    super::conform(batches, &super::queries::orgs_schema())
}

/// The latest usage date in gold: the default reference date of "last N days".
async fn latest_usage_date(ctx: &SessionContext) -> Result<Option<NaiveDate>> {
    let b = run(ctx, "SELECT max(usage_date) FROM gold_org_daily_usage_by_service", vec![]).await?;
    let Some(b) = b.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let days = b.column(0).as_primitive::<Date32Type>();
    Ok(days.is_valid(0).then(|| super::from_days(days.value(0))))
}

/// The first day of `d`'s month.
pub fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn date(d: Option<NaiveDate>) -> ScalarValue {
    ScalarValue::Date32(d.map(super::days))
}

fn text(s: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(s.to_string()))
}

async fn run(ctx: &SessionContext, sql: &str, args: Vec<ScalarValue>) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.with_param_values(args)?.collect().await?)
}

/// The org with the highest cost over the last 30 days, used for sample answers.
pub async fn busiest_org(lake: &Lake) -> Result<Option<String>> {
    let ctx = crate::lake::session();
    if !lake.register(&ctx, Layer::Gold, "org_health").await? {
        return Ok(None);
    }
    let batches = run(
        &ctx,
        "SELECT org_id FROM gold_org_health ORDER BY cost_last_30d_usd DESC, org_id LIMIT 1",
        vec![],
    )
    .await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(None) };
    let c = datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8)?;
    use datafusion::arrow::array::AsArray;
    Ok(c.as_string::<i32>().iter().next().flatten().map(str::to_string))
}
