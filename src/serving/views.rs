//! The serving tables: each one is a SQL view over the gold marts, with the primary key it has in
//! Cassandra (`serving/cassandra/cql/`).
//!
//! Publishing materialises these views into Cassandra; the lake backend answers the queries from
//! the same views. Both backends therefore compute every figure with the same expression, and the
//! Cassandra tests check that the values survive the round trip exactly.
//!
//! The rollups answer the org-optional queries: `scope` is the org id, or [`ALL_ORGS`] for the
//! sum over every org (org ids are validated to `[A-Za-z0-9_-]`, so `*` cannot collide).

/// The `scope` of all-org rollup rows.
pub const ALL_ORGS: &str = "*";

/// Gold marts the serving layer reads.
pub const GOLD_MARTS: [&str; 6] = [
    "org_daily_usage_by_service",
    "cost_anomaly_mart",
    "tickets_by_org_date",
    "revenue_by_org_month",
    "genai_tokens_by_org_date",
    "org_health",
];

/// A serving table: its name, the SQL that computes it from `gold_*` tables, and its primary key
/// (partition key columns first, then clustering columns).
#[derive(Debug, Clone, Copy)]
pub struct ServingTable {
    /// Table name in the keyspace.
    pub name: &'static str,
    /// DataFusion SQL over the registered `gold_*` tables; column names are the CQL columns.
    pub sql: &'static str,
    /// Partition key columns.
    pub partition_key: &'static [&'static str],
    /// Clustering columns.
    pub clustering: &'static [&'static str],
}

impl ServingTable {
    /// Partition key then clustering columns.
    pub fn primary_key(&self) -> Vec<&'static str> {
        self.partition_key.iter().chain(self.clustering).copied().collect()
    }
}

/// critical-tickets per scope and day.
pub const CRITICAL_TICKETS_BY_DAY: &str = "
    SELECT scope, CAST(date_trunc('month', ticket_date) AS DATE) AS month, ticket_date,
           CAST(sum(tickets) AS BIGINT) AS critical_tickets, CAST(sum(sla_breaches) AS BIGINT) AS sla_breaches,
           CAST(sum(sla_breaches) AS DOUBLE) / sum(tickets) AS sla_breach_rate
    FROM (SELECT org_id AS scope, ticket_date, tickets, sla_breaches FROM gold_tickets_by_org_date WHERE severity = 'critical'
          UNION ALL
          SELECT '*' AS scope, ticket_date, tickets, sla_breaches FROM gold_tickets_by_org_date WHERE severity = 'critical')
    GROUP BY scope, ticket_date";

/// revenue per scope and month.
pub const REVENUE_BY_MONTH: &str = "
    SELECT scope, CAST(date_part('year', month) AS INT) AS year, month,
           CAST(sum(subtotal_usd) AS DECIMAL(18, 6)) AS subtotal_usd, CAST(sum(credits_usd) AS DECIMAL(18, 6)) AS credits_usd,
           CAST(sum(taxes_usd) AS DECIMAL(18, 6)) AS taxes_usd, CAST(sum(revenue_usd) AS DECIMAL(18, 6)) AS revenue_usd,
           CAST(sum(invoices) AS BIGINT) AS invoices
    FROM (SELECT org_id AS scope, month, subtotal_usd, credits_usd, taxes_usd, revenue_usd, invoices FROM gold_revenue_by_org_month
          UNION ALL
          SELECT '*' AS scope, month, subtotal_usd, credits_usd, taxes_usd, revenue_usd, invoices FROM gold_revenue_by_org_month)
    GROUP BY scope, month";

/// genai-tokens per scope and day.
pub const GENAI_TOKENS_BY_DAY: &str = "
    SELECT scope, CAST(date_trunc('month', usage_date) AS DATE) AS month, usage_date,
           CAST(sum(total_tokens) AS BIGINT) AS total_tokens, CAST(sum(genai_cost_usd) AS DECIMAL(18, 6)) AS genai_cost_usd,
           CASE WHEN sum(total_tokens) > 0
                THEN CAST(CAST(sum(genai_cost_usd) AS DECIMAL(38, 6)) * 1000000 / sum(total_tokens) AS DECIMAL(18, 6)) END
             AS cost_per_million_tokens
    FROM (SELECT org_id AS scope, usage_date, total_tokens, genai_cost_usd FROM gold_genai_tokens_by_org_date
          UNION ALL
          SELECT '*' AS scope, usage_date, total_tokens, genai_cost_usd FROM gold_genai_tokens_by_org_date)
    GROUP BY scope, usage_date";

/// Every serving table, in publishing order.
pub const TABLES: &[ServingTable] = &[
    ServingTable {
        name: "org_daily_usage_by_service",
        sql: "SELECT *, CAST(date_trunc('month', usage_date) AS DATE) AS month FROM gold_org_daily_usage_by_service",
        partition_key: &["org_id", "month"],
        clustering: &["usage_date", "service"],
    },
    ServingTable {
        name: "cost_anomaly_mart",
        sql: "SELECT *, CAST(date_trunc('month', usage_date) AS DATE) AS month FROM gold_cost_anomaly_mart",
        partition_key: &["org_id", "month"],
        clustering: &["usage_date", "service"],
    },
    ServingTable {
        name: "tickets_by_org_date",
        sql: "SELECT *, CAST(date_trunc('month', ticket_date) AS DATE) AS month FROM gold_tickets_by_org_date",
        partition_key: &["org_id", "month"],
        clustering: &["ticket_date", "severity"],
    },
    ServingTable {
        name: "revenue_by_org_month",
        sql: "SELECT *, CAST(date_part('year', month) AS INT) AS year FROM gold_revenue_by_org_month",
        partition_key: &["org_id", "year"],
        clustering: &["month"],
    },
    ServingTable {
        name: "genai_tokens_by_org_date",
        sql: "SELECT *, CAST(date_trunc('month', usage_date) AS DATE) AS month FROM gold_genai_tokens_by_org_date",
        partition_key: &["org_id", "month"],
        clustering: &["usage_date"],
    },
    ServingTable {
        name: "org_health",
        sql: "SELECT * FROM gold_org_health",
        partition_key: &["org_id"],
        clustering: &[],
    },
    ServingTable {
        name: "critical_tickets_by_day",
        sql: CRITICAL_TICKETS_BY_DAY,
        partition_key: &["scope", "month"],
        clustering: &["ticket_date"],
    },
    ServingTable {
        name: "revenue_by_month",
        sql: REVENUE_BY_MONTH,
        partition_key: &["scope", "year"],
        clustering: &["month"],
    },
    ServingTable {
        name: "genai_tokens_by_day",
        sql: GENAI_TOKENS_BY_DAY,
        partition_key: &["scope", "month"],
        clustering: &["usage_date"],
    },
];

/// The date span of the published data: the reference date of "last N days" and where each
/// query's buckets start and end.
pub const SPAN_SQL: &str = "
    SELECT (SELECT max(usage_date) FROM gold_org_daily_usage_by_service) AS reference_date,
           (SELECT min(usage_date) FROM gold_org_daily_usage_by_service) AS first_usage_date,
           (SELECT max(usage_date) FROM gold_org_daily_usage_by_service) AS last_usage_date,
           (SELECT min(ticket_date) FROM gold_tickets_by_org_date) AS first_ticket_date,
           (SELECT max(ticket_date) FROM gold_tickets_by_org_date) AS last_ticket_date,
           (SELECT min(month) FROM gold_revenue_by_org_month) AS first_month,
           (SELECT max(month) FROM gold_revenue_by_org_month) AS last_month";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_in_the_cql_schema_with_its_key() {
        let cql = include_str!("cassandra/cql/V001__serving_tables.cql");
        for t in TABLES {
            assert!(cql.contains(&format!("CREATE TABLE IF NOT EXISTS {} (", t.name)), "{}", t.name);
            let pk = match t.partition_key {
                [one] => format!("(({one})"),
                many => format!("(({})", many.join(", ")),
            };
            let key = if t.clustering.is_empty() {
                format!("{pk})")
            } else {
                format!("{pk}, {})", t.clustering.join(", "))
            };
            assert!(cql.contains(&format!("PRIMARY KEY {key}")), "{}: PRIMARY KEY {key}", t.name);
        }
        assert_eq!(ALL_ORGS, "*");
    }
}
