//! The five dashboard queries: names, parameters and what they answer.
//!
//! | name | question | parameters |
//! |---|---|---|
//! | `daily-usage` | cost and requests per day for an org (and service) over a date range | `--org` (required), `--service`, `--from`, `--to` |
//! | `top-services` | top N services by cost for an org over the last 14 days | `--org` (required), `--top` (5), `--to` |
//! | `critical-tickets` | critical tickets and SLA breach rate per day over the last 30 days | `--org`, `--to` |
//! | `revenue` | monthly revenue with credits and taxes, in USD | `--org`, `--from`, `--to` |
//! | `genai-tokens` | GenAI tokens and estimated cost per day | `--org`, `--from`, `--to` |
//! | `anomalies` | cost anomalies (day, service) for an org over a date range, for the dashboard's highlights | `--org` (required), `--from`, `--to` |
//!
//! "Last N days" ends at the reference date: `--to` when given, else the latest usage date in the
//! data (one reference for every query and for `gold_org_health`).
//! Without `--org`, the org-optional queries sum over every org.

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One of the five queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryName {
    /// Cost and requests per day for an org and service over a date range.
    DailyUsage,
    /// Top N services by cost for an org over the last 14 days.
    TopServices,
    /// Critical tickets and SLA breach rate per day over the last 30 days.
    CriticalTickets,
    /// Monthly revenue with credits and taxes, in USD.
    Revenue,
    /// GenAI tokens and estimated cost per day.
    GenaiTokens,
    /// Cost anomalies per day and service for an org over a date range.
    Anomalies,
}

impl QueryName {
    /// Every query: SPEC's five, then the anomaly highlights.
    pub const ALL: [QueryName; 6] = [
        QueryName::DailyUsage,
        QueryName::TopServices,
        QueryName::CriticalTickets,
        QueryName::Revenue,
        QueryName::GenaiTokens,
        QueryName::Anomalies,
    ];

    /// The CLI and API name (`daily-usage`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            QueryName::DailyUsage => "daily-usage",
            QueryName::TopServices => "top-services",
            QueryName::CriticalTickets => "critical-tickets",
            QueryName::Revenue => "revenue",
            QueryName::GenaiTokens => "genai-tokens",
            QueryName::Anomalies => "anomalies",
        }
    }

    /// Whether `--org` is required.
    pub fn needs_org(self) -> bool {
        matches!(self, QueryName::DailyUsage | QueryName::TopServices | QueryName::Anomalies)
    }
}

/// Parameters of a query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryParams {
    /// Organisation id.
    pub org: Option<String>,
    /// Service (daily-usage only).
    pub service: Option<String>,
    /// First date included.
    pub from: Option<NaiveDate>,
    /// Last date included; also the reference date of "last N days".
    pub to: Option<NaiveDate>,
    /// How many rows for top-N queries.
    pub top: Option<usize>,
}

/// Default N of top-services.
pub const DEFAULT_TOP: usize = 5;
/// Largest N accepted.
pub const MAX_TOP: usize = 1000;

impl QueryParams {
    /// Checks the parameters for `name`: one clear sentence when something is wrong.
    pub fn validate(&self, name: QueryName) -> Result<()> {
        if name.needs_org() && self.org.is_none() {
            return Err(Error::Usage(format!("{} needs --org ID", name.as_str())));
        }
        for (what, v) in [("org", &self.org), ("service", &self.service)] {
            if let Some(v) = v
                && (v.is_empty()
                    || v.len() > 64
                    || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                return Err(Error::Usage(format!(
                    "{what} {v:?} is not a valid id (letters, digits, '_' or '-', at most 64)"
                )));
            }
        }
        for d in [self.from, self.to].into_iter().flatten() {
            if !DATE_YEARS.contains(&chrono::Datelike::year(&d)) {
                return Err(Error::Usage(format!("date {d} is outside the years 1900 to 9999")));
            }
        }
        if let (Some(f), Some(t)) = (self.from, self.to)
            && f > t
        {
            return Err(Error::Usage(format!("--from {f} is after --to {t}")));
        }
        if let Some(n) = self.top
            && (n == 0 || n > MAX_TOP)
        {
            return Err(Error::Usage(format!("--top must be between 1 and {MAX_TOP}")));
        }
        Ok(())
    }
}

/// Days of top-services' window, ending at the reference date.
pub const TOP_SERVICES_DAYS: i64 = 14;
/// Days of critical-tickets' window, ending at the reference date.
pub const CRITICAL_TICKETS_DAYS: i64 = 30;

/// The columns every backend returns for `name`, in order, with their types.
pub fn output_schema(name: QueryName) -> SchemaRef {
    let money = || DataType::Decimal128(18, 6);
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    let fields = match name {
        QueryName::DailyUsage => vec![
            f("usage_date", DataType::Date32),
            f("service", DataType::Utf8),
            f("cost_usd", money()),
            f("requests", money()),
        ],
        QueryName::TopServices => vec![
            f("rank", DataType::UInt64),
            f("service", DataType::Utf8),
            f("cost_usd", money()),
            f("requests", money()),
        ],
        QueryName::CriticalTickets => vec![
            f("ticket_date", DataType::Date32),
            f("critical_tickets", DataType::Int64),
            f("sla_breaches", DataType::Int64),
            f("sla_breach_rate", DataType::Float64),
        ],
        QueryName::Revenue => vec![
            f("month", DataType::Date32),
            f("subtotal_usd", money()),
            f("credits_usd", money()),
            f("taxes_usd", money()),
            f("revenue_usd", money()),
            f("invoices", DataType::Int64),
        ],
        QueryName::GenaiTokens => vec![
            f("usage_date", DataType::Date32),
            f("total_tokens", DataType::Int64),
            f("genai_cost_usd", money()),
            f("cost_per_million_tokens", money()),
        ],
        QueryName::Anomalies => vec![
            f("usage_date", DataType::Date32),
            f("service", DataType::Utf8),
            f("cost_usd", money()),
            f("baseline_cost_usd", money()),
            f("zscore", DataType::Float64),
            f("methods_flagged", DataType::Int64),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// The columns of the org list.
pub fn orgs_schema() -> SchemaRef {
    let f = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![f("org_id"), f("org_name"), f("industry"), f("plan_tier")]))
}

/// Dates accepted by the queries: anything else is a typo, and far-away dates would overflow
/// the "last N days" arithmetic.
pub const DATE_YEARS: std::ops::RangeInclusive<i32> = 1900..=9999;

/// Parses a date given as `YYYY-MM-DD`, between the years 1900 and 9999.
pub fn parse_date(s: &str) -> std::result::Result<NaiveDate, String> {
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))?;
    if !DATE_YEARS.contains(&chrono::Datelike::year(&d)) {
        return Err(format!("{s:?} is outside the years 1900 to 9999"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let p = QueryParams::default();
        assert_eq!(p.validate(QueryName::DailyUsage).unwrap_err().to_string(), "daily-usage needs --org ID");
        assert!(p.validate(QueryName::Revenue).is_ok());
        let bad = QueryParams { org: Some("x'; DROP".into()), ..Default::default() };
        assert!(bad.validate(QueryName::Revenue).unwrap_err().to_string().contains("not a valid id"));
        let range = QueryParams {
            from: parse_date("2025-08-02").ok(),
            to: parse_date("2025-08-01").ok(),
            ..Default::default()
        };
        assert!(range.validate(QueryName::Revenue).is_err());
        let top = QueryParams { org: Some("o".into()), top: Some(0), ..Default::default() };
        assert!(top.validate(QueryName::TopServices).is_err());
        assert!(parse_date("2025-13-01").is_err());
        assert!(parse_date("-262143-01-01").is_err() && parse_date("+262142-12-31").is_err());
        let far = QueryParams { to: NaiveDate::from_ymd_opt(100_000, 1, 1), ..Default::default() };
        assert!(far.validate(QueryName::Revenue).is_err());
    }
}
