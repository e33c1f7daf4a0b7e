//! The five queries answered from Cassandra: prepared statements on the partition key, a
//! clustering range for dates, one partition per month (or year) of the range.
//!
//! | query | table | partitions read |
//! |---|---|---|
//! | daily-usage | org_daily_usage_by_service | (org, month) for each month of the range |
//! | top-services | org_daily_usage_by_service | (org, month) of the last 14 days: 1–2 |
//! | critical-tickets | critical_tickets_by_day | (scope, month) of the last 30 days: 1–2 |
//! | revenue | revenue_by_month | (scope, year) for each year of the range |
//! | genai-tokens | genai_tokens_by_day | (scope, month) for each month of the range |
//! | anomalies | cost_anomaly_mart | (org, month) for each month of the range |
//!
//! Ranges without `--from`/`--to` are the published span (`serving_state`), so no query scans.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use datafusion::arrow::array::{Array, AsArray, Decimal128Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Schema};
use scylla::value::{CqlDate, CqlValue, Row};
use std::sync::Arc;

use super::Cassandra;
use super::values::rows_to_batch;
use crate::serving::lake::first_of_month;
use crate::serving::queries::{
    CRITICAL_TICKETS_DAYS, DEFAULT_TOP, QueryName, QueryParams, TOP_SERVICES_DAYS, output_schema,
};
use crate::serving::views::ALL_ORGS;
use crate::{Error, Result};

/// The `serving_state` row written by the last publish.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServingState {
    /// Reference date of "last N days" (latest usage date).
    pub reference_date: Option<NaiveDate>,
    /// First usage date published.
    pub first_usage_date: Option<NaiveDate>,
    /// Last usage date published.
    pub last_usage_date: Option<NaiveDate>,
    /// First revenue month published.
    pub first_month: Option<NaiveDate>,
    /// Last revenue month published.
    pub last_month: Option<NaiveDate>,
}

/// Reads `serving_state`; an error when nothing was published to this keyspace yet.
pub async fn state(c: &Cassandra) -> Result<ServingState> {
    let exists = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'serving_state'";
    let published = !c.rows("looking up the serving tables", exists, &(c.keyspace(),)).await?.is_empty();
    let cql = format!(
        "SELECT reference_date, first_usage_date, last_usage_date, first_month, last_month FROM {}.serving_state WHERE id = ?",
        c.keyspace()
    );
    let rows =
        if published { c.rows("reading serving_state", &cql, &("current",)).await? } else { Vec::new() };
    let Some(row) = rows.first() else {
        return Err(Error::Usage(format!(
            "nothing is published in Cassandra keyspace {} yet; run `cloudlake publish` first",
            c.keyspace()
        )));
    };
    let d = |i: usize| match row.columns.get(i) {
        Some(Some(CqlValue::Date(CqlDate(n)))) => Some(date_of(*n)),
        _ => None,
    };
    Ok(ServingState {
        reference_date: d(0),
        first_usage_date: d(1),
        last_usage_date: d(2),
        first_month: d(3),
        last_month: d(4),
    })
}

/// When the data was last published; `None` when nothing is.
pub async fn published_at(c: &Cassandra) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let exists = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'serving_state'";
    if c.rows("looking up the serving tables", exists, &(c.keyspace(),)).await?.is_empty() {
        return Ok(None);
    }
    let cql = format!("SELECT published_at FROM {}.serving_state WHERE id = ?", c.keyspace());
    let rows = c.rows("reading serving_state", &cql, &("current",)).await?;
    Ok(rows.first().and_then(|r| match r.columns.first() {
        Some(Some(CqlValue::Timestamp(t))) => chrono::DateTime::from_timestamp_millis(t.0),
        _ => None,
    }))
}

/// Every org (id, name, industry, plan tier), by name, from `org_health` (one small row per
/// org; the only read that visits every partition, and the API caches it).
pub async fn orgs(c: &Cassandra) -> Result<Vec<RecordBatch>> {
    let cql = format!("SELECT org_id, org_name, industry, plan_tier FROM {}.org_health", c.keyspace());
    let mut rows = c.rows("reading the org list", &cql, &()).await?;
    let text = |r: &Row, i: usize| match r.columns.get(i) {
        Some(Some(CqlValue::Text(s))) => Some(s.clone()),
        _ => None,
    };
    rows.sort_by_key(|r| (text(r, 1), text(r, 0)));
    Ok(vec![rows_to_batch(crate::serving::queries::orgs_schema(), &rows)?])
}

/// Answers `name` from Cassandra, with the same columns, types and rows as the lake backend.
pub async fn query(c: &Cassandra, name: QueryName, params: &QueryParams) -> Result<Vec<RecordBatch>> {
    params.validate(name)?;
    let st = state(c).await?;
    let ks = c.keyspace();
    if let Some(org) = &params.org {
        let cql = format!("SELECT org_id FROM {ks}.org_health WHERE org_id = ?");
        if c.rows("looking up the org", &cql, &(org.as_str(),)).await?.is_empty() {
            return Err(Error::Usage(format!("unknown org {org:?}")));
        }
    }
    let scope = params.org.clone().unwrap_or_else(|| ALL_ORGS.to_string());
    let reference = params.to.or(st.reference_date);
    let window = |days: i64| reference.map(|r| (r - chrono::Days::new(days as u64 - 1), r));
    let schema = output_schema(name);
    let rows: Vec<Row> = match name {
        QueryName::DailyUsage => {
            let cql = format!(
                "SELECT usage_date, service, cost_usd, requests FROM {ks}.org_daily_usage_by_service
                 WHERE org_id = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            );
            let span = clip(params.from, params.to, st.first_usage_date, st.last_usage_date);
            let mut rows = by_month(c, &cql, &scope, span).await?;
            if let Some(service) = &params.service {
                rows.retain(|r| matches!(r.columns.get(1), Some(Some(CqlValue::Text(s))) if s == service));
            }
            rows
        }
        QueryName::TopServices => {
            let cql = format!(
                "SELECT service, cost_usd, requests FROM {ks}.org_daily_usage_by_service
                 WHERE org_id = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            );
            let rows = by_month(c, &cql, &scope, window(TOP_SERVICES_DAYS)).await?;
            return Ok(vec![top_services(&rows, params.top.unwrap_or(DEFAULT_TOP))?]);
        }
        QueryName::CriticalTickets => {
            let cql = format!(
                "SELECT ticket_date, critical_tickets, sla_breaches, sla_breach_rate FROM {ks}.critical_tickets_by_day
                 WHERE scope = ? AND month = ? AND ticket_date >= ? AND ticket_date <= ?"
            );
            by_month(c, &cql, &scope, window(CRITICAL_TICKETS_DAYS)).await?
        }
        QueryName::Revenue => {
            let cql = format!(
                "SELECT month, subtotal_usd, credits_usd, taxes_usd, revenue_usd, invoices FROM {ks}.revenue_by_month
                 WHERE scope = ? AND year = ? AND month >= ? AND month <= ?"
            );
            let mut rows = Vec::new();
            if let Some((from, to)) =
                clip(params.from.map(first_of_month), params.to, st.first_month, st.last_month)
            {
                for year in from.year()..=to.year() {
                    let values = (scope.as_str(), year, cql_date(from), cql_date(to));
                    rows.extend(c.rows("reading revenue_by_month", &cql, &values).await?);
                }
            }
            rows
        }
        QueryName::GenaiTokens => {
            let cql = format!(
                "SELECT usage_date, total_tokens, genai_cost_usd, cost_per_million_tokens FROM {ks}.genai_tokens_by_day
                 WHERE scope = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            );
            let span = clip(params.from, params.to, st.first_usage_date, st.last_usage_date);
            by_month(c, &cql, &scope, span).await?
        }
        QueryName::Anomalies => {
            let cql = format!(
                "SELECT usage_date, service, cost_usd, baseline_cost_usd, zscore, methods_flagged, is_anomaly
                 FROM {ks}.cost_anomaly_mart WHERE org_id = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            );
            let span = clip(params.from, params.to, st.first_usage_date, st.last_usage_date);
            let mut rows = by_month(c, &cql, &scope, span).await?;
            // A month of one org is at most 31 days × services: filtering it here is cheaper
            // than a second table keyed by the flag.
            rows.retain(|r| matches!(r.columns.last(), Some(Some(CqlValue::Boolean(true)))));
            for r in &mut rows {
                r.columns.pop();
            }
            rows
        }
    };
    Ok(vec![rows_to_batch(schema, &rows)?])
}

/// The requested range within the published one; `None` when they do not meet.
fn clip(
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    first: Option<NaiveDate>,
    last: Option<NaiveDate>,
) -> Option<(NaiveDate, NaiveDate)> {
    let (first, last) = (first?, last?);
    let from = from.map_or(first, |f| f.max(first));
    let to = to.map_or(last, |t| t.min(last));
    (from <= to).then_some((from, to))
}

/// Rows of `cql` (bound to key, month, from, to) for each month partition of `span`, in order.
async fn by_month(
    c: &Cassandra,
    cql: &str,
    key: &str,
    span: Option<(NaiveDate, NaiveDate)>,
) -> Result<Vec<Row>> {
    let Some((from, to)) = span else { return Ok(Vec::new()) };
    let mut rows = Vec::new();
    let mut month = first_of_month(from);
    while month <= to {
        let values = (key, cql_date(month), cql_date(from), cql_date(to));
        rows.extend(c.rows("reading a month partition", cql, &values).await?);
        month = month + chrono::Months::new(1);
    }
    Ok(rows)
}

/// Sums cost and requests per service (exact decimals), ranks by cost descending then service.
fn top_services(rows: &[Row], top: usize) -> Result<RecordBatch> {
    let money = DataType::Decimal128(18, 6);
    let input = Arc::new(Schema::new(vec![
        Field::new("service", DataType::Utf8, true),
        Field::new("cost_usd", money.clone(), true),
        Field::new("requests", money.clone(), true),
    ]));
    let batch = rows_to_batch(input, rows)?;
    let (services, cost, requests) = (
        batch.column(0).as_string::<i32>(),
        batch.column(1).as_primitive::<Decimal128Type>(),
        batch.column(2).as_primitive::<Decimal128Type>(),
    );
    let add = |acc: &mut Option<i128>, a: &Decimal128Array, i: usize| {
        if a.is_valid(i) {
            *acc = Some(acc.unwrap_or(0) + a.value(i));
        }
    };
    let mut sums: HashMap<Option<&str>, (Option<i128>, Option<i128>)> = HashMap::new();
    for i in 0..batch.num_rows() {
        let key = services.is_valid(i).then(|| services.value(i));
        let entry = sums.entry(key).or_default();
        add(&mut entry.0, cost, i);
        add(&mut entry.1, requests, i);
    }
    let mut ranked: Vec<_> = sums.into_iter().collect();
    // ORDER BY sum(cost_usd) DESC (nulls first, as in SQL), service ASC (nulls last).
    ranked.sort_by(|(sa, (ca, _)), (sb, (cb, _))| {
        let by_cost = match (ca, cb) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Less,
            (_, None) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => b.cmp(a),
        };
        by_cost.then_with(|| match (sa, sb) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, _) => std::cmp::Ordering::Greater,
            (_, None) => std::cmp::Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        })
    });
    ranked.truncate(top);
    let schema = output_schema(QueryName::TopServices);
    let decimal = |v: Vec<Option<i128>>| -> Result<Decimal128Array> {
        let a = Decimal128Array::from(v).with_precision_and_scale(18, 6)?;
        a.validate_decimal_precision(18)?;
        Ok(a)
    };
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt64Array::from_iter_values(1..=ranked.len() as u64)),
            Arc::new(StringArray::from(ranked.iter().map(|(s, _)| *s).collect::<Vec<_>>())),
            Arc::new(decimal(ranked.iter().map(|(_, (c, _))| *c).collect())?),
            Arc::new(decimal(ranked.iter().map(|(_, (_, r))| *r).collect())?),
        ],
    )?)
}

fn cql_date(d: NaiveDate) -> CqlDate {
    CqlDate((i64::from(crate::serving::days(d)) + (1i64 << 31)) as u32)
}

fn date_of(n: u32) -> NaiveDate {
    crate::serving::from_days((i64::from(n) - (1i64 << 31)) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn ranges_are_clipped_to_the_published_span() {
        let (first, last) = (Some(d("2025-07-03")), Some(d("2025-08-31")));
        assert_eq!(clip(None, None, first, last), Some((d("2025-07-03"), d("2025-08-31"))));
        assert_eq!(
            clip(Some(d("2020-01-01")), Some(d("2025-07-10")), first, last),
            Some((d("2025-07-03"), d("2025-07-10")))
        );
        assert_eq!(clip(Some(d("2026-01-01")), None, first, last), None);
        assert_eq!(clip(None, None, None, None), None);
        assert_eq!(date_of(cql_date(d("2025-08-31")).0), d("2025-08-31"));
    }

    #[test]
    fn top_services_sum_exactly_and_rank_by_cost_then_name() {
        let row = |s: &str, cost: i128, req: i128| Row {
            columns: vec![
                Some(CqlValue::Text(s.into())),
                crate::serving::cassandra::values::to_cql(
                    &(Arc::new(Decimal128Array::from(vec![cost]).with_precision_and_scale(18, 6).unwrap())
                        as _),
                    0,
                )
                .unwrap(),
                crate::serving::cassandra::values::to_cql(
                    &(Arc::new(Decimal128Array::from(vec![req]).with_precision_and_scale(18, 6).unwrap())
                        as _),
                    0,
                )
                .unwrap(),
            ],
        };
        let rows = vec![row("b", 1_000_001, 1), row("a", 500_000, 2), row("a", 500_001, 3), row("c", 5, 4)];
        let batch = top_services(&rows, 2).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let names = batch.column(1).as_string::<i32>();
        assert_eq!((names.value(0), names.value(1)), ("a", "b"));
        assert_eq!(batch.column(2).as_primitive::<Decimal128Type>().value(0), 1_000_001);
        assert_eq!(batch.column(3).as_primitive::<Decimal128Type>().value(0), 5);
    }
}
