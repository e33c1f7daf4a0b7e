//! Conformance: canonical codes from the spellings real feeds use (SPEC section 5).
//!
//! Each code family has a canonical vocabulary and an alias table. A raw value is trimmed and
//! lower-cased (currencies upper-cased), separators are unified, then aliases map to canonical
//! values. A value that is still not canonical is *kept as normalised* and flagged by a `warn`
//! rule (`*_known`): never guessed. Everything here renders to SQL `CASE` expressions so the
//! same mapping runs inside DataFusion, in batch and in the stream.

/// Canonical regions.
pub const REGIONS: &[&str] =
    &["us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-northeast", "sa-east"];
/// Region aliases (after lower-casing and `_`/space → `-`).
pub const REGION_ALIASES: &[(&str, &str)] = &[
    ("useast", "us-east"),
    ("us-east-1", "us-east"),
    ("us-east-2", "us-east"),
    ("uswest", "us-west"),
    ("us-west-1", "us-west"),
    ("us-west-2", "us-west"),
    ("eu-west-1", "eu-west"),
    ("euwest", "eu-west"),
    ("eu-central-1", "eu-central"),
    ("eucentral", "eu-central"),
    ("ap-south-1", "ap-south"),
    ("apsouth", "ap-south"),
    ("ap-northeast-1", "ap-northeast"),
    ("apnortheast", "ap-northeast"),
    ("sa-east-1", "sa-east"),
    ("saeast", "sa-east"),
];

/// Canonical services.
pub const SERVICES: &[&str] = &["compute", "database", "storage", "networking", "analytics", "genai"];
/// Service aliases (after lower-casing and removing `_`, `-` and spaces).
pub const SERVICE_ALIASES: &[(&str, &str)] = &[
    ("db", "database"),
    ("databases", "database"),
    ("network", "networking"),
    ("net", "networking"),
    ("vm", "compute"),
    ("ai", "genai"),
    ("generativeai", "genai"),
    ("llm", "genai"),
    ("objectstorage", "storage"),
];

/// Canonical metrics and the unit each implies (used to impute a missing unit).
pub const METRIC_UNITS: &[(&str, &str)] = &[
    ("requests", "count"),
    ("cpu_hours", "hours"),
    ("storage_gb_hours", "gb_hours"),
    ("genai_tokens", "tokens"),
];
/// Metric aliases (after lower-casing and `-`/space → `_`).
pub const METRIC_ALIASES: &[(&str, &str)] = &[
    ("request", "requests"),
    ("req", "requests"),
    ("cpu_hour", "cpu_hours"),
    ("cpuhours", "cpu_hours"),
    ("storage_gb_hour", "storage_gb_hours"),
    ("gb_hours", "storage_gb_hours"),
    ("tokens", "genai_tokens"),
];
/// Unit aliases (after lower-casing and `-`/space → `_`).
pub const UNIT_ALIASES: &[(&str, &str)] =
    &[("hour", "hours"), ("h", "hours"), ("gb_hour", "gb_hours"), ("gbh", "gb_hours"), ("counts", "count")];

/// Canonical currencies (ISO 4217).
pub const CURRENCIES: &[&str] = &["USD", "EUR", "ARS"];
/// Currency aliases (after upper-casing).
pub const CURRENCY_ALIASES: &[(&str, &str)] =
    &[("US$", "USD"), ("$", "USD"), ("€", "EUR"), ("EURO", "EUR"), ("AR$", "ARS")];

fn case(normalised: String, aliases: &[(&str, &str)]) -> String {
    if aliases.is_empty() {
        return normalised;
    }
    let whens: String = aliases.iter().map(|(a, c)| format!(" WHEN '{a}' THEN '{c}'")).collect();
    format!("(CASE {normalised}{whens} ELSE {normalised} END)")
}

/// SQL: canonical region of `expr`.
pub fn region(expr: &str) -> String {
    case(format!("regexp_replace(lower(trim({expr})), '[_ ]+', '-', 'g')"), REGION_ALIASES)
}

/// SQL: canonical service of `expr`.
pub fn service(expr: &str) -> String {
    case(format!("regexp_replace(lower(trim({expr})), '[-_ ]+', '', 'g')"), SERVICE_ALIASES)
}

/// SQL: canonical metric of `expr`.
pub fn metric(expr: &str) -> String {
    case(format!("regexp_replace(lower(trim({expr})), '[- ]+', '_', 'g')"), METRIC_ALIASES)
}

/// SQL: canonical unit of `expr`.
pub fn unit(expr: &str) -> String {
    case(format!("regexp_replace(lower(trim({expr})), '[- ]+', '_', 'g')"), UNIT_ALIASES)
}

/// SQL: the unit implied by a canonical metric (NULL when unknown).
pub fn unit_of_metric(metric_expr: &str) -> String {
    let whens: String = METRIC_UNITS.iter().map(|(m, u)| format!(" WHEN '{m}' THEN '{u}'")).collect();
    format!("(CASE {metric_expr}{whens} END)")
}

/// SQL: canonical currency of `expr`.
pub fn currency(expr: &str) -> String {
    case(format!("upper(trim({expr}))"), CURRENCY_ALIASES)
}

/// SQL: a lower-cased, trimmed code or id.
pub fn code(expr: &str) -> String {
    format!("lower(trim({expr}))")
}

/// SQL: `expr IN (...)` over a vocabulary.
pub fn known(expr: &str, vocabulary: &[&str]) -> String {
    let list: Vec<String> = vocabulary.iter().map(|v| format!("'{v}'")).collect();
    format!("{expr} IN ({})", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn eval(sql: String) -> String {
        let ctx = SessionContext::new();
        let b = ctx.sql(&format!("SELECT {sql} AS v")).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::display::array_value_to_string(b[0].column(0), 0).unwrap()
    }

    #[tokio::test]
    async fn aliases_and_casing_map_to_canonical_codes() {
        for raw in ["'US-EAST'", "'us_east'", "' Us-East '", "'us east'", "'us-east-1'"] {
            assert_eq!(eval(region(raw)).await, "us-east", "{raw}");
        }
        for raw in ["'GenAI'", "'gen_ai'", "'Gen-AI'", "' genai '"] {
            assert_eq!(eval(service(raw)).await, "genai", "{raw}");
        }
        assert_eq!(eval(service("'DB'")).await, "database");
        assert_eq!(eval(metric("'CPU-Hours'")).await, "cpu_hours");
        assert_eq!(eval(currency("' usd '")).await, "USD");
        assert_eq!(eval(currency("'€'")).await, "EUR");
        assert_eq!(eval(unit_of_metric(&metric("'Storage GB Hours'"))).await, "gb_hours");
    }

    #[tokio::test]
    async fn unknown_values_are_kept_normalised_not_guessed() {
        assert_eq!(eval(region("'Mars_North'")).await, "mars-north");
        assert_eq!(eval(known(&region("'Mars_North'"), REGIONS)).await, "false");
        assert_eq!(eval(known(&region("'EU_West'"), REGIONS)).await, "true");
    }
}
