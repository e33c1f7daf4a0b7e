//! The five queries answered from the gold marts in the lake (the embedded default).
//!
//! Parameters are bound as placeholders (`$1`, ...), never spliced into SQL text.

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use super::queries::{DEFAULT_TOP, QueryName, QueryParams};
use crate::lake::{Lake, Layer};
use crate::{Error, Result};

/// Answers `name` from the lake.
pub async fn query(lake: &Lake, name: QueryName, params: &QueryParams) -> Result<Vec<RecordBatch>> {
    params.validate(name)?;
    let ctx = crate::lake::session();
    for mart in [
        "org_daily_usage_by_service",
        "tickets_by_org_date",
        "revenue_by_org_month",
        "genai_tokens_by_org_date",
        "org_health",
    ] {
        if !lake.register(&ctx, Layer::Gold, mart).await? {
            return Err(Error::Usage(format!(
                "gold mart {mart} not found in {}; run `cloudlake run` first",
                lake.root().display()
            )));
        }
    }
    if let Some(org) = &params.org
        && run(&ctx, "SELECT org_id FROM gold_org_health WHERE org_id = $1", vec![text(org)])
            .await?
            .iter()
            .all(|b| b.num_rows() == 0)
    {
        return Err(Error::Usage(format!("unknown org {org:?}")));
    }
    let org = params.org.as_deref().map(text).unwrap_or(ScalarValue::Utf8(None));
    let date = |d: Option<chrono::NaiveDate>| {
        ScalarValue::Date32(d.map(|d| (d - chrono::NaiveDate::default()).num_days() as i32))
    };
    let (from, to) = (date(params.from), date(params.to));
    let (sql, args): (&str, Vec<ScalarValue>) = match name {
        QueryName::DailyUsage => (
            "SELECT usage_date, service, cost_usd, requests FROM gold_org_daily_usage_by_service
             WHERE org_id = $1 AND ($2 IS NULL OR service = $2)
               AND ($3 IS NULL OR usage_date >= $3) AND ($4 IS NULL OR usage_date <= $4)
             ORDER BY usage_date, service",
            vec![org, params.service.as_deref().map(text).unwrap_or(ScalarValue::Utf8(None)), from, to],
        ),
        QueryName::TopServices => (
            "WITH ref AS (SELECT COALESCE($2, max(usage_date)) AS d FROM gold_org_daily_usage_by_service)
             SELECT row_number() OVER (ORDER BY sum(cost_usd) DESC, service) AS rank, service,
                    CAST(sum(cost_usd) AS DECIMAL(18, 6)) AS cost_usd, CAST(sum(requests) AS DECIMAL(18, 6)) AS requests
             FROM gold_org_daily_usage_by_service CROSS JOIN ref
             WHERE org_id = $1 AND usage_date > ref.d - INTERVAL '14 days' AND usage_date <= ref.d
             GROUP BY service ORDER BY rank LIMIT $3",
            vec![org, to, ScalarValue::Int64(Some(params.top.unwrap_or(DEFAULT_TOP) as i64))],
        ),
        QueryName::CriticalTickets => (
            "WITH ref AS (SELECT COALESCE($2, max(usage_date)) AS d FROM gold_org_daily_usage_by_service)
             SELECT ticket_date, CAST(sum(tickets) AS BIGINT) AS critical_tickets, CAST(sum(sla_breaches) AS BIGINT) AS sla_breaches,
                    CAST(sum(sla_breaches) AS DOUBLE) / sum(tickets) AS sla_breach_rate
             FROM gold_tickets_by_org_date CROSS JOIN ref
             WHERE severity = 'critical' AND ($1 IS NULL OR org_id = $1)
               AND ticket_date > ref.d - INTERVAL '30 days' AND ticket_date <= ref.d
             GROUP BY ticket_date ORDER BY ticket_date",
            vec![org, to],
        ),
        QueryName::Revenue => (
            "SELECT month, CAST(sum(subtotal_usd) AS DECIMAL(18, 6)) AS subtotal_usd, CAST(sum(credits_usd) AS DECIMAL(18, 6)) AS credits_usd,
                    CAST(sum(taxes_usd) AS DECIMAL(18, 6)) AS taxes_usd, CAST(sum(revenue_usd) AS DECIMAL(18, 6)) AS revenue_usd,
                    CAST(sum(invoices) AS BIGINT) AS invoices
             FROM gold_revenue_by_org_month
             WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR month >= date_trunc('month', $2)) AND ($3 IS NULL OR month <= $3)
             GROUP BY month ORDER BY month",
            vec![org, from, to],
        ),
        QueryName::GenaiTokens => (
            "SELECT usage_date, CAST(sum(total_tokens) AS BIGINT) AS total_tokens, CAST(sum(genai_cost_usd) AS DECIMAL(18, 6)) AS genai_cost_usd,
                    CASE WHEN sum(total_tokens) > 0
                         THEN CAST(CAST(sum(genai_cost_usd) AS DECIMAL(38, 6)) * 1000000 / sum(total_tokens) AS DECIMAL(18, 6)) END AS cost_per_million_tokens
             FROM gold_genai_tokens_by_org_date
             WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR usage_date >= $2) AND ($3 IS NULL OR usage_date <= $3)
             GROUP BY usage_date ORDER BY usage_date",
            vec![org, from, to],
        ),
    };
    run(&ctx, sql, args).await
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
