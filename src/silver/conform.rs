//! Conformance: canonical codes from the spellings real feeds use (SPEC section 5).
//!
//! Each code family has a canonical vocabulary and an alias table. A raw value is trimmed of
//! spaces and lower-cased (currencies upper-cased), runs of separators are unified, then aliases
//! map to canonical values. A value that is still not canonical is *kept as normalised* and
//! flagged by a `warn` rule (`*_known`): never guessed.
//!
//! Each family is a DataFusion scalar function (`conform_region(x)`, ..., see [`udfs`]) that
//! every session of the pipeline registers, so the same mapping runs inside DataFusion, in batch,
//! in the stream and on a Ballista cluster. A function maps each distinct value of a batch once
//! (a batch of events repeats a handful of codes thousands of times) and hands the batch back
//! untouched when every value is already canonical.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, LargeStringArray, StringArray, StringViewArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::types::logical_string;
use datafusion::common::{ScalarValue, exec_err};
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignatureClass,
    Volatility,
};
use datafusion::prelude::SessionContext;
use regex::Regex;

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

/// A code family: how a raw value becomes canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Regions: lower-cased, runs of `_` and spaces become `-`, then [`REGION_ALIASES`].
    Region,
    /// Services: lower-cased, `-`, `_` and spaces removed, then [`SERVICE_ALIASES`].
    Service,
    /// Metrics: lower-cased, runs of `-` and spaces become `_`, then [`METRIC_ALIASES`].
    Metric,
    /// Units: as metrics, then [`UNIT_ALIASES`].
    Unit,
    /// Currencies: upper-cased, then [`CURRENCY_ALIASES`].
    Currency,
    /// Ids and codes without a vocabulary (org and resource ids): lower-cased.
    Code,
}

static REGION_SEPARATORS: LazyLock<Regex> = LazyLock::new(|| Regex::new("[_ ]+").expect("a valid regex"));
static SERVICE_SEPARATORS: LazyLock<Regex> = LazyLock::new(|| Regex::new("[-_ ]+").expect("a valid regex"));
static METRIC_SEPARATORS: LazyLock<Regex> = LazyLock::new(|| Regex::new("[- ]+").expect("a valid regex"));

impl Family {
    /// Every family, in the order of [`udfs`].
    pub const ALL: [Family; 6] =
        [Family::Region, Family::Service, Family::Metric, Family::Unit, Family::Currency, Family::Code];

    /// The SQL function applying this family.
    pub fn function(self) -> &'static str {
        match self {
            Family::Region => "conform_region",
            Family::Service => "conform_service",
            Family::Metric => "conform_metric",
            Family::Unit => "conform_unit",
            Family::Currency => "conform_currency",
            Family::Code => "conform_code",
        }
    }

    fn aliases(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Family::Region => REGION_ALIASES,
            Family::Service => SERVICE_ALIASES,
            Family::Metric => METRIC_ALIASES,
            Family::Unit => UNIT_ALIASES,
            Family::Currency => CURRENCY_ALIASES,
            Family::Code => &[],
        }
    }

    /// The canonical spelling of `raw` (trimmed of spaces, cased, separators unified, aliases
    /// resolved); borrowed when `raw` already is one.
    pub fn conform(self, raw: &str) -> Cow<'_, str> {
        let trimmed = raw.trim_matches(' ');
        let cased = match self {
            Family::Currency => recased(trimmed, trimmed.to_uppercase()),
            _ => recased(trimmed, trimmed.to_lowercase()),
        };
        let separated = match self {
            Family::Region => replace_all(cased, &REGION_SEPARATORS, "-"),
            Family::Service => replace_all(cased, &SERVICE_SEPARATORS, ""),
            Family::Metric | Family::Unit => replace_all(cased, &METRIC_SEPARATORS, "_"),
            Family::Currency | Family::Code => cased,
        };
        match self.aliases().iter().find(|(alias, _)| *alias == separated) {
            Some((_, canonical)) => Cow::Borrowed(*canonical),
            None => separated,
        }
    }
}

/// `cased` of `s`, borrowed when casing changes nothing (runs once per distinct value).
fn recased(s: &str, cased: String) -> Cow<'_, str> {
    if cased == s { Cow::Borrowed(s) } else { Cow::Owned(cased) }
}

fn replace_all<'a>(s: Cow<'a, str>, separators: &Regex, with: &str) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => separators.replace_all(b, with),
        Cow::Owned(o) => Cow::Owned(separators.replace_all(&o, with).into_owned()),
    }
}

/// The DataFusion function of a [`Family`]: one string argument, the same string type back,
/// NULL for NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConformUdf {
    family: Family,
    signature: Signature,
}

impl ScalarUDFImpl for ConformUdf {
    fn name(&self) -> &str {
        self.family.function()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        match &args.args[0] {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(conform_array(self.family, a)?)),
            ColumnarValue::Scalar(v) => {
                let out = conform_array(self.family, &v.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            }
        }
    }
}

/// `family` applied to every value of a string array; the array itself when nothing changes.
fn conform_array(family: Family, array: &ArrayRef) -> datafusion::common::Result<ArrayRef> {
    let out: Option<ArrayRef> = match array.data_type() {
        DataType::Utf8View => {
            conformed(family, array.as_string_view().iter(), |v| Arc::new(StringViewArray::from(v)))
        }
        DataType::Utf8 => {
            conformed(family, array.as_string::<i32>().iter(), |v| Arc::new(StringArray::from(v)))
        }
        DataType::LargeUtf8 => {
            conformed(family, array.as_string::<i64>().iter(), |v| Arc::new(LargeStringArray::from(v)))
        }
        other => return exec_err!("{} takes text, not {other}", family.function()),
    };
    Ok(out.unwrap_or_else(|| array.clone()))
}

/// The array `build` makes of the conformed values, or `None` when every value already is
/// canonical. Each distinct value of a code family is conformed once; ids, nearly all distinct,
/// are checked by their bytes and conformed only when they need it.
fn conformed<'a>(
    family: Family,
    values: impl Iterator<Item = Option<&'a str>> + Clone,
    build: impl FnOnce(Vec<Option<&str>>) -> ArrayRef,
) -> Option<ArrayRef> {
    if family == Family::Code {
        let plain = |v: &str| {
            v.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase())
                && !v.starts_with(' ')
                && !v.ends_with(' ')
        };
        if values.clone().flatten().all(plain) {
            return None;
        }
        let conformed: Vec<Option<Cow<str>>> = values.map(|v| v.map(|v| family.conform(v))).collect();
        return Some(build(conformed.iter().map(|v| v.as_deref()).collect()));
    }
    let mut seen: foldhash::HashMap<&'a str, Option<String>> = foldhash::HashMap::default();
    let mut changed = false;
    for v in values.clone().flatten() {
        seen.entry(v).or_insert_with(|| match family.conform(v) {
            Cow::Borrowed(b) if b == v => None,
            c => {
                changed = true;
                Some(c.into_owned())
            }
        });
    }
    changed.then(|| {
        build(values.map(|v| v.map(|v| seen.get(v).and_then(|c| c.as_deref()).unwrap_or(v))).collect())
    })
}

/// The conformance functions, one per [`Family`].
pub fn udfs() -> Vec<Arc<ScalarUDF>> {
    Family::ALL.iter().map(|f| udf(*f)).collect()
}

/// The conformance function of `family`.
pub fn udf(family: Family) -> Arc<ScalarUDF> {
    let signature = Signature::coercible(
        vec![Coercion::new_exact(TypeSignatureClass::Native(logical_string()))],
        Volatility::Immutable,
    );
    Arc::new(ScalarUDF::new_from_impl(ConformUdf { family, signature }))
}

/// The conformance function called `name`, if one is.
pub fn udf_named(name: &str) -> Option<Arc<ScalarUDF>> {
    Family::ALL.iter().find(|f| f.function() == name).map(|f| udf(*f))
}

/// Registers the conformance functions in `ctx`.
pub fn register(ctx: &SessionContext) {
    for u in udfs() {
        ctx.register_udf(u.as_ref().clone());
    }
}

fn call(family: Family, expr: &str) -> String {
    format!("{}({expr})", family.function())
}

/// SQL: canonical region of `expr`.
pub fn region(expr: &str) -> String {
    call(Family::Region, expr)
}

/// SQL: canonical service of `expr`.
pub fn service(expr: &str) -> String {
    call(Family::Service, expr)
}

/// SQL: canonical metric of `expr`.
pub fn metric(expr: &str) -> String {
    call(Family::Metric, expr)
}

/// SQL: canonical unit of `expr`.
pub fn unit(expr: &str) -> String {
    call(Family::Unit, expr)
}

/// SQL: the unit implied by a canonical metric (NULL when unknown).
pub fn unit_of_metric(metric_expr: &str) -> String {
    let whens: String = METRIC_UNITS.iter().map(|(m, u)| format!(" WHEN '{m}' THEN '{u}'")).collect();
    format!("(CASE {metric_expr}{whens} END)")
}

/// SQL: canonical currency of `expr`.
pub fn currency(expr: &str) -> String {
    call(Family::Currency, expr)
}

/// SQL: a lower-cased code or id, trimmed of spaces.
pub fn code(expr: &str) -> String {
    call(Family::Code, expr)
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
        register(&ctx);
        let b = ctx.sql(&format!("SELECT {sql} AS v")).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::display::array_value_to_string(b[0].column(0), 0).unwrap()
    }

    /// The rule of each family written in plain SQL, as the functions replace it.
    fn spelled_in_sql(family: Family, x: &str) -> String {
        let case = |normalised: String| {
            let whens: String =
                family.aliases().iter().map(|(a, c)| format!(" WHEN '{a}' THEN '{c}'")).collect();
            if whens.is_empty() {
                normalised
            } else {
                format!("(CASE {normalised}{whens} ELSE {normalised} END)")
            }
        };
        match family {
            Family::Region => case(format!("regexp_replace(lower(trim({x})), '[_ ]+', '-', 'g')")),
            Family::Service => case(format!("regexp_replace(lower(trim({x})), '[-_ ]+', '', 'g')")),
            Family::Metric | Family::Unit => {
                case(format!("regexp_replace(lower(trim({x})), '[- ]+', '_', 'g')"))
            }
            Family::Currency => case(format!("upper(trim({x}))")),
            Family::Code => format!("lower(trim({x}))"),
        }
    }

    #[tokio::test]
    async fn each_function_equals_its_rule_in_sql_over_every_string_type() {
        use datafusion::arrow::array::RecordBatch;
        use datafusion::arrow::compute::cast;
        use datafusion::arrow::datatypes::{Field, Schema};
        let raw = [
            Some("us-east"),
            Some(" US_East "),
            Some("us  east"),
            Some("\tus-east"),
            Some("EU__WEST-1"),
            Some(""),
            Some("   "),
            None,
            Some("Gen-AI"),
            Some("gen _ ai"),
            Some("DB"),
            Some("CPU-Hours"),
            Some("gb hour"),
            Some("storage gb hours"),
            Some(" usd "),
            Some("€"),
            Some("Us$"),
            Some("euro"),
            Some("ÉTÉ Σ"),
            Some("ORG-0042 "),
            Some("res_ABC"),
            Some("already_fine"),
            Some("-_- "),
            Some("a\u{a0}b"),
        ];
        let ctx = SessionContext::new();
        register(&ctx);
        let utf8: ArrayRef = Arc::new(StringArray::from(raw.to_vec()));
        for data_type in [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View] {
            let column = cast(&utf8, &data_type).unwrap();
            let schema = Arc::new(Schema::new(vec![Field::new("x", data_type.clone(), true)]));
            let batch = RecordBatch::try_new(schema, vec![column]).unwrap();
            let _ = ctx.deregister_table("t").unwrap();
            ctx.register_batch("t", batch).unwrap();
            for family in Family::ALL {
                let sql = format!(
                    "SELECT {f}, {s}, arrow_typeof({f}) FROM t",
                    f = call(family, "x"),
                    s = spelled_in_sql(family, "x")
                );
                let b = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                let b = datafusion::arrow::compute::concat_batches(&b[0].schema(), &b).unwrap();
                let (ours, theirs) = (
                    cast(b.column(0), &DataType::Utf8).unwrap(),
                    cast(b.column(1), &DataType::Utf8).unwrap(),
                );
                let (ours, theirs) = (ours.as_string::<i32>(), theirs.as_string::<i32>());
                assert_eq!(ours.len(), raw.len());
                for (i, r) in raw.iter().enumerate() {
                    assert_eq!(ours.is_null(i), theirs.is_null(i), "{family:?} {r:?}");
                    if !ours.is_null(i) {
                        assert_eq!(ours.value(i), theirs.value(i), "{family:?} {r:?} as {data_type}");
                    }
                }
                let typ = datafusion::arrow::util::display::array_value_to_string(b.column(2), 0).unwrap();
                assert_eq!(typ, data_type.to_string(), "{family:?} keeps the input's string type");
            }
        }
    }

    #[test]
    fn a_batch_of_canonical_values_comes_back_untouched() {
        let canonical: ArrayRef =
            Arc::new(StringViewArray::from(vec![Some("us-east"), None, Some("eu-west")]));
        let out = conform_array(Family::Region, &canonical).unwrap();
        assert!(Arc::ptr_eq(&out, &canonical));
        let mixed: ArrayRef = Arc::new(StringViewArray::from(vec![Some("us-east"), None, Some("EU_West")]));
        let out = conform_array(Family::Region, &mixed).unwrap();
        let out = out.as_string_view();
        assert_eq!((out.value(0), out.is_null(1), out.value(2)), ("us-east", true, "eu-west"));
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
