//! `gold_genai_tokens_by_org_date` — grain (org_id, usage_date).
//!
//! GenAI tokens and cost per org and day (genai service only), with the unit price
//! `cost_per_million_tokens = genai_cost_usd / total_tokens × 1,000,000` (null without tokens).

use super::{Mart, Scope};

fn sql(daily: &str) -> String {
    format!(
        "SELECT org_id, usage_date, genai_tokens AS total_tokens, cost_usd AS genai_cost_usd,
            CASE WHEN genai_tokens > 0
                 THEN CAST(CAST(cost_usd AS DECIMAL(38, 6)) * 1000000 / genai_tokens AS DECIMAL(18, 6)) END AS cost_per_million_tokens,
            events
        FROM {daily}
        WHERE service = 'genai'"
    )
}

/// The mart.
pub const MART: Mart = Mart {
    name: "genai_tokens_by_org_date",
    grain: &["org_id", "usage_date"],
    scope: Scope::Events,
    sql,
    partitions: &[],
};
