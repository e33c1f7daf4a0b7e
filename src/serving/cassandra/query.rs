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
use scylla::response::{PagingState, PagingStateResponse};
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

/// The `serving_state` row's `columns`; `None` when nothing was published to this keyspace
/// (not even its tables exist yet).
async fn state_row(c: &Cassandra, columns: &str) -> Result<Option<Row>> {
    let exists = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'serving_state'";
    if c.rows("looking up the serving tables", exists, &(c.keyspace(),)).await?.is_empty() {
        return Ok(None);
    }
    let cql = format!("SELECT {columns} FROM {}.serving_state WHERE id = ?", c.keyspace());
    Ok(c.rows("reading serving_state", &cql, &("current",)).await?.into_iter().next())
}

/// Reads `serving_state`; an error when nothing was published to this keyspace yet.
pub async fn state(c: &Cassandra) -> Result<ServingState> {
    let row =
        state_row(c, "reference_date, first_usage_date, last_usage_date, first_month, last_month").await?;
    let Some(row) = row else {
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
    Ok(state_row(c, "published_at").await?.and_then(|r| match r.columns.first() {
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
    // As the lake's ORDER BY org_name, org_id: NULL names last.
    rows.sort_by_key(|r| (text(r, 1).is_none(), text(r, 1), text(r, 0)));
    Ok(vec![rows_to_batch(crate::serving::queries::orgs_schema(), &rows)?])
}

/// The reads of one query: a prepared statement, the bind values of each partition it reads
/// (in answer order), and what the client keeps of the rows.
struct Plan {
    cql: String,
    partitions: Vec<Vec<CqlValue>>,
    keep: Keep,
}

/// Rows dropped on the client, within partitions already bounded to a month of one org.
enum Keep {
    All,
    /// daily-usage `--service`.
    Service(String),
    /// anomalies: rows whose last column (`is_anomaly`) is true, without that column.
    Anomalies,
}

impl Keep {
    fn apply(&self, rows: &mut Vec<Row>) {
        match self {
            Keep::All => {}
            Keep::Service(service) => {
                rows.retain(|r| matches!(r.columns.get(1), Some(Some(CqlValue::Text(s))) if s == service))
            }
            Keep::Anomalies => {
                rows.retain(|r| matches!(r.columns.last(), Some(Some(CqlValue::Boolean(true)))));
                for r in rows.iter_mut() {
                    r.columns.pop();
                }
            }
        }
    }
}

/// Where a page starts: a partition of the plan and Cassandra's paging state within it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageCursor {
    /// Index of the partition read (for top-services: the row offset).
    pub partition: usize,
    /// Cassandra's paging state in that partition (absent: its first page).
    pub state: Option<Vec<u8>>,
}

/// Checks the parameters and the org, and reads the published span.
async fn prepare_query(c: &Cassandra, name: QueryName, params: &QueryParams) -> Result<ServingState> {
    params.validate(name)?;
    let st = state(c).await?;
    if let Some(org) = &params.org {
        let cql = format!("SELECT org_id FROM {}.org_health WHERE org_id = ?", c.keyspace());
        if c.rows("looking up the org", &cql, &(org.as_str(),)).await?.is_empty() {
            return Err(Error::Usage(format!("unknown org {org:?}")));
        }
    }
    Ok(st)
}

/// The reads of `name` (top-services included: its rows are then aggregated).
fn plan(ks: &str, name: QueryName, params: &QueryParams, st: &ServingState) -> Plan {
    let scope = params.org.clone().unwrap_or_else(|| ALL_ORGS.to_string());
    let reference = params.to.or(st.reference_date);
    let window = |days: i64| reference.map(|r| (r - chrono::Days::new(days as u64 - 1), r));
    let usage_span = clip(params.from, params.to, st.first_usage_date, st.last_usage_date);
    let by_month = |cql: String, span: Option<(NaiveDate, NaiveDate)>, keep: Keep| Plan {
        cql,
        partitions: month_partitions(&scope, span),
        keep,
    };
    match name {
        QueryName::DailyUsage => by_month(
            format!(
                "SELECT usage_date, service, cost_usd, requests FROM {ks}.org_daily_usage_by_service
                 WHERE org_id = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            ),
            usage_span,
            params.service.clone().map_or(Keep::All, Keep::Service),
        ),
        QueryName::TopServices => by_month(
            format!(
                "SELECT service, cost_usd, requests FROM {ks}.org_daily_usage_by_service
                 WHERE org_id = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            ),
            window(TOP_SERVICES_DAYS),
            Keep::All,
        ),
        QueryName::CriticalTickets => by_month(
            format!(
                "SELECT ticket_date, critical_tickets, sla_breaches, sla_breach_rate FROM {ks}.critical_tickets_by_day
                 WHERE scope = ? AND month = ? AND ticket_date >= ? AND ticket_date <= ?"
            ),
            window(CRITICAL_TICKETS_DAYS),
            Keep::All,
        ),
        QueryName::Revenue => {
            let span = clip(params.from.map(first_of_month), params.to, st.first_month, st.last_month);
            let partitions = span
                .map(|(from, to)| {
                    (from.year()..=to.year())
                        .map(|year| {
                            vec![
                                CqlValue::Text(scope.clone()),
                                CqlValue::Int(year),
                                CqlValue::Date(cql_date(from)),
                                CqlValue::Date(cql_date(to)),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            Plan {
                cql: format!(
                    "SELECT month, subtotal_usd, credits_usd, taxes_usd, revenue_usd, invoices FROM {ks}.revenue_by_month
                     WHERE scope = ? AND year = ? AND month >= ? AND month <= ?"
                ),
                partitions,
                keep: Keep::All,
            }
        }
        QueryName::GenaiTokens => by_month(
            format!(
                "SELECT usage_date, total_tokens, genai_cost_usd, cost_per_million_tokens FROM {ks}.genai_tokens_by_day
                 WHERE scope = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            ),
            usage_span,
            Keep::All,
        ),
        // A month of one org is at most 31 days × services: filtering the flag here is cheaper
        // than a second table keyed by it.
        QueryName::Anomalies => by_month(
            format!(
                "SELECT usage_date, service, cost_usd, baseline_cost_usd, zscore, methods_flagged, is_anomaly
                 FROM {ks}.cost_anomaly_mart WHERE org_id = ? AND month = ? AND usage_date >= ? AND usage_date <= ?"
            ),
            usage_span,
            Keep::Anomalies,
        ),
    }
}

/// Answers `name` from Cassandra, with the same columns, types and rows as the lake backend.
pub async fn query(c: &Cassandra, name: QueryName, params: &QueryParams) -> Result<Vec<RecordBatch>> {
    let st = prepare_query(c, name, params).await?;
    let plan = plan(c.keyspace(), name, params, &st);
    let mut rows = Vec::new();
    for values in &plan.partitions {
        rows.extend(c.rows("reading a partition", &plan.cql, values).await?);
    }
    plan.keep.apply(&mut rows);
    if name == QueryName::TopServices {
        return Ok(vec![top_services(&rows, params.top.unwrap_or(DEFAULT_TOP))?]);
    }
    Ok(vec![rows_to_batch(output_schema(name), &rows)?])
}

/// One page of `name` from `from`, at most `limit` rows, with the cursor of the next page: each
/// page is one Cassandra page of one partition (the driver's paging state), so a deep page
/// costs one read. Top-services, an aggregate of at most a few hundred rows, pages by offset.
pub async fn query_page(
    c: &Cassandra,
    name: QueryName,
    params: &QueryParams,
    from: PageCursor,
    limit: usize,
) -> Result<(RecordBatch, Option<PageCursor>)> {
    if name == QueryName::TopServices {
        let all = query(c, name, params).await?.remove(0);
        let start = from.partition.min(all.num_rows());
        let len = limit.min(all.num_rows() - start);
        let next = (start + len < all.num_rows()).then(|| PageCursor { partition: start + len, state: None });
        return Ok((all.slice(start, len), next));
    }
    let st = prepare_query(c, name, params).await?;
    let plan = plan(c.keyspace(), name, params, &st);
    let mut stmt = c.prepare(&plan.cql).await?;
    stmt.set_page_size(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
    let mut at = from;
    loop {
        let Some(values) = plan.partitions.get(at.partition) else {
            return Ok((rows_to_batch(output_schema(name), &[])?, None));
        };
        let paging = at.state.clone().map_or_else(PagingState::start, PagingState::new_from_raw_bytes);
        let (result, more) = c
            .retry("reading a page", || async {
                Ok(c.session().execute_single_page(&stmt, values, paging.clone()).await?)
            })
            .await?;
        let rows_result = result.into_rows_result().map_err(|e| Error::Cassandra(e.to_string()))?;
        let mut rows: Vec<Row> = rows_result
            .rows::<Row>()
            .map_err(|e| Error::Cassandra(e.to_string()))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Cassandra(e.to_string()))?;
        plan.keep.apply(&mut rows);
        let next = match more {
            PagingStateResponse::HasMorePages { state } => Some(PageCursor {
                partition: at.partition,
                state: state.as_bytes_slice().map(|b| b.to_vec()),
            }),
            PagingStateResponse::NoMorePages => (at.partition + 1 < plan.partitions.len())
                .then(|| PageCursor { partition: at.partition + 1, state: None }),
        };
        match next {
            // An empty stretch (a month without rows, or all filtered): go on to the next one.
            Some(n) if rows.is_empty() => at = n,
            next => return Ok((rows_to_batch(output_schema(name), &rows)?, next)),
        }
    }
}

/// Bind values (key, month, from, to) of each month partition of `span`, in order.
fn month_partitions(key: &str, span: Option<(NaiveDate, NaiveDate)>) -> Vec<Vec<CqlValue>> {
    let Some((from, to)) = span else { return Vec::new() };
    let mut partitions = Vec::new();
    let mut month = first_of_month(from);
    while month <= to {
        partitions.push(vec![
            CqlValue::Text(key.to_string()),
            CqlValue::Date(cql_date(month)),
            CqlValue::Date(cql_date(from)),
            CqlValue::Date(cql_date(to)),
        ]);
        month = month + chrono::Months::new(1);
    }
    partitions
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
    super::values::cql_day(crate::serving::days(d))
}

fn date_of(n: u32) -> NaiveDate {
    crate::serving::from_days(super::values::arrow_day(CqlDate(n)))
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
