//! Data-quality rules: declared once per silver table, applied identically in batch and stream.
//!
//! A [`Rule`] is an id, a SQL boolean `check` over the table's conformed columns that a good row
//! satisfies, an [`Action`] and a human reason. A row *violates* a rule when the check is not
//! TRUE (so NULL is a violation: checks that accept nulls say so, `x IS NULL OR ...`).
//!
//! - `warn`: the row stays in silver; the rule id is added to its `dq_flags` and counted;
//! - `quarantine`: the row goes to `quarantine/<source>` with the rule id and reason (the first
//!   violated quarantine rule, in declaration order, is the one recorded);
//! - `fail`: the run stops with a clear error naming the rule and an example.
//!
//! Actions can be overridden per rule id in the config file (`[rules]` table), e.g. to make a
//! warning fail a run in production. [`apply`] evaluates every rule of a table in one pass.

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::{and, cast, filter_record_batch, is_null, not};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What happens to a row that violates a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Keep the row, flag it in `dq_flags`, count it.
    Warn,
    /// Move the row to quarantine with the rule id and reason.
    Quarantine,
    /// Stop the run.
    Fail,
}

/// A declared data-quality rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Rule id, unique across tables: `<table>.<name>`.
    pub id: &'static str,
    /// SQL boolean over the conformed columns; TRUE for a good row.
    pub check: &'static str,
    /// Default action (overridable in config).
    pub action: Action,
    /// Why a violating row is wrong, for people.
    pub reason: &'static str,
}

/// Per-rule figures of one application.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleOutcome {
    /// Rule id.
    pub rule: String,
    /// Action applied.
    pub action: Option<Action>,
    /// Rows checked.
    pub checked: u64,
    /// Rows violating the rule (for quarantine rules: rows quarantined *by this rule*).
    pub violations: u64,
}

impl RuleOutcome {
    /// Share of checked rows that passed, in percent.
    pub fn pass_rate(&self) -> f64 {
        if self.checked == 0 { 100.0 } else { 100.0 * (1.0 - self.violations as f64 / self.checked as f64) }
    }
}

/// The result of applying a table's rules.
#[derive(Debug, Default)]
pub struct Applied {
    /// Rows that stay in silver, with a `dq_flags` column (comma-separated warn rule ids).
    pub clean: Vec<RecordBatch>,
    /// Rows to quarantine, with `__rule` (the rule id) as their last column.
    pub quarantined: Vec<RecordBatch>,
    /// Per rule outcome, in declaration order.
    pub outcomes: Vec<RuleOutcome>,
    /// Schema of the conformed rows (the input SELECT), whether or not any row came out.
    pub input_schema: Option<datafusion::arrow::datatypes::Schema>,
}

/// Column holding the warn rule ids a silver row violates.
pub const DQ_FLAGS: &str = "dq_flags";
/// Column holding the quarantine rule a row violates (internal, dropped from silver).
pub const QUARANTINE_RULE: &str = "__rule";

/// Resolves each rule's action against the config overrides.
pub fn effective_action(rule: &Rule, overrides: &BTreeMap<String, Action>) -> Action {
    overrides.get(rule.id).copied().unwrap_or(rule.action)
}

/// Evaluates `rules` over the rows of `input_sql` (a SELECT producing the conformed columns).
pub async fn apply(
    ctx: &SessionContext,
    input_sql: &str,
    rules: &[Rule],
    overrides: &BTreeMap<String, Action>,
) -> Result<Applied> {
    let actions: Vec<Action> = rules.iter().map(|r| effective_action(r, overrides)).collect();
    // Each check is evaluated once, as `__v<i>`; the flag and quarantine columns read those.
    let checks: String = rules
        .iter()
        .enumerate()
        .map(|(i, r)| format!(", (({}) IS NOT TRUE) AS \"__v{i}\"", r.check))
        .collect();
    let cases = |action: Action| -> Vec<String> {
        (0..rules.len())
            .filter(|i| actions[*i] == action)
            .map(|i| format!("WHEN \"__v{i}\" THEN '{}'", rules[i].id))
            .collect()
    };
    let warn: Vec<String> = cases(Action::Warn).iter().map(|w| format!("CASE {w} END")).collect();
    let flags = if warn.is_empty() {
        "CAST(NULL AS VARCHAR)".to_string()
    } else {
        format!("NULLIF(concat_ws(',', {}), '')", warn.join(", "))
    };
    let quarantine = cases(Action::Quarantine);
    let rule = if quarantine.is_empty() {
        "CAST(NULL AS VARCHAR)".to_string()
    } else {
        format!("CASE {} END", quarantine.join(" "))
    };
    let sql = format!(
        "SELECT *, {flags} AS {DQ_FLAGS}, {rule} AS {QUARANTINE_RULE} FROM (SELECT t.*{checks} FROM ({input_sql}) t)"
    );
    let df = ctx.sql(&sql).await?;
    let annotated = df.schema().as_arrow().clone();
    let input_fields = annotated.fields().len() - rules.len() - 2;
    let input_schema = datafusion::arrow::datatypes::Schema::new(annotated.fields()[..input_fields].to_vec());
    let batches = df.collect().await?;

    let mut outcomes: Vec<RuleOutcome> = rules
        .iter()
        .zip(&actions)
        .map(|(r, a)| RuleOutcome { rule: r.id.to_string(), action: Some(*a), ..Default::default() })
        .collect();
    let mut applied = Applied { input_schema: Some(input_schema), ..Default::default() };
    // Batches are split on every core (copying the rows that stay is most of the work), each
    // let go once split.
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    for split in crate::parallel::map(batches, |b| split(&b, rules, &actions))? {
        for (outcome, (checked, violations)) in outcomes.iter_mut().zip(split.counts) {
            outcome.checked += checked;
            outcome.violations += violations;
        }
        applied.quarantined.extend(split.quarantined);
        applied.clean.extend(split.clean);
    }
    applied.outcomes = outcomes;
    Ok(applied)
}

/// One annotated batch of [`apply`], split.
struct Split {
    /// (checked, violations) per rule.
    counts: Vec<(u64, u64)>,
    quarantined: Option<RecordBatch>,
    clean: Option<RecordBatch>,
}

/// Counts a batch's violations (an error for a `fail` rule violated) and splits its rows into
/// those that stay (with `dq_flags`) and those quarantined (with `__rule` last).
fn split(batch: &RecordBatch, rules: &[Rule], actions: &[Action]) -> Result<Split> {
    let n = batch.num_rows() as u64;
    let base = batch.num_columns() - rules.len() - 2;
    let rule_col = batch.column(batch.num_columns() - 1).clone();
    let stays = is_null(&rule_col)?;
    let rule_ids = cast(&rule_col, &DataType::Utf8)?;
    let rule_ids = rule_ids.as_string::<i32>();
    let mut counts = Vec::with_capacity(rules.len());
    for (i, (r, a)) in rules.iter().zip(actions).enumerate() {
        let v = batch.column(base + i).as_boolean();
        let (checked, count) = match a {
            // A quarantined row counts under the first quarantine rule it broke only.
            Action::Quarantine => (n, rule_ids.iter().filter(|x| *x == Some(r.id)).count() as u64),
            // Warnings are about the rows that stay in silver.
            Action::Warn => (stays.true_count() as u64, and(v, &stays)?.true_count() as u64),
            Action::Fail => (n, v.true_count() as u64),
        };
        if *a == Action::Fail && count > 0 {
            let row = (0..v.len()).find(|j| v.value(*j)).unwrap_or(0);
            return Err(Error::RuleFailed {
                rule: r.id.to_string(),
                source_name: r.id.split('.').next().unwrap_or(r.id).to_string(),
                reason: format!("{} ({count} rows; first: {})", r.reason, row_json(batch, row, base)?),
            });
        }
        counts.push((checked, count));
    }
    // Drop the per-rule booleans: keep the conformed columns, dq_flags and __rule.
    let mut keep: Vec<usize> = (0..base).collect();
    keep.push(batch.num_columns() - 2);
    keep.push(batch.num_columns() - 1);
    let batch = batch.project(&keep)?;
    let q = filter_record_batch(&batch, &not(&stays)?)?;
    let clean = filter_record_batch(&batch, &stays)?;
    let clean = if clean.num_rows() > 0 {
        let last = clean.num_columns() - 1;
        Some(clean.project(&(0..last).collect::<Vec<_>>())?)
    } else {
        None
    };
    Ok(Split { counts, quarantined: (q.num_rows() > 0).then_some(q), clean })
}

/// One row as a JSON object (columns before `upto`), for messages and quarantine records.
pub fn row_json(batch: &RecordBatch, row: usize, upto: usize) -> Result<String> {
    let b = batch.slice(row, 1).project(&(0..upto.min(batch.num_columns())).collect::<Vec<_>>())?;
    rows_json(&b).map(|mut v| v.pop().unwrap_or_default())
}

/// Every row of a batch as a JSON object, nulls explicit.
pub fn rows_json(batch: &RecordBatch) -> Result<Vec<String>> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buf);
        w.write(batch)?;
        w.finish()?;
    }
    let text =
        String::from_utf8(buf).map_err(|e| Error::Internal(format!("arrow wrote non-UTF-8 JSON: {e}")))?;
    Ok(text.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    const RULES: &[Rule] = &[
        Rule {
            id: "t.id_present",
            check: "id IS NOT NULL",
            action: Action::Quarantine,
            reason: "id is required",
        },
        Rule { id: "t.x_small", check: "x IS NULL OR x < 10", action: Action::Warn, reason: "x is large" },
        Rule { id: "t.x_positive", check: "x >= 0", action: Action::Quarantine, reason: "x must be >= 0" },
    ];

    fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c"), Some("d"), Some("e")])),
                Arc::new(Int64Array::from(vec![Some(1), Some(-5), Some(50), Some(-1), None])),
            ],
        )
        .unwrap();
        crate::lake::register_batches(&ctx, "t", schema, vec![b]).unwrap();
        ctx
    }

    #[tokio::test]
    async fn rows_are_split_flagged_and_counted() {
        let a = apply(&ctx(), "SELECT * FROM t", RULES, &BTreeMap::new()).await.unwrap();
        let clean: usize = a.clean.iter().map(|b| b.num_rows()).sum();
        let quarantined: usize = a.quarantined.iter().map(|b| b.num_rows()).sum();
        assert_eq!((clean, quarantined), (2, 3)); // a, c stay; null id, -1 and null x go
        let v: Vec<_> = a.outcomes.iter().map(|o| (o.rule.as_str(), o.checked, o.violations)).collect();
        // The null-id row also has x = -5, but only its first quarantine rule counts.
        // Warnings are counted over the 2 rows that stay (c has x = 50).
        assert_eq!(v, vec![("t.id_present", 5, 1), ("t.x_small", 2, 1), ("t.x_positive", 5, 2)]);
        let flags = a.clean[0].column_by_name(DQ_FLAGS).unwrap();
        let flags: Vec<_> = flags
            .as_string_view_opt()
            .map(|s| s.iter().map(|x| x.map(str::to_string)).collect())
            .unwrap_or_else(|| flags.as_string::<i32>().iter().map(|x| x.map(str::to_string)).collect());
        assert_eq!(flags, vec![None, Some("t.x_small".to_string())]);
        assert_eq!(
            a.quarantined[0].schema().field(a.quarantined[0].num_columns() - 1).name(),
            QUARANTINE_RULE
        );
    }

    #[tokio::test]
    async fn a_fail_rule_stops_with_the_rule_and_an_example() {
        let overrides = BTreeMap::from([("t.x_small".to_string(), Action::Fail)]);
        let err = apply(&ctx(), "SELECT * FROM t", RULES, &overrides).await.unwrap_err().to_string();
        assert!(err.contains("t.x_small") && err.contains("x is large") && err.contains("\"x\":50"), "{err}");
    }

    #[test]
    fn pass_rate_is_a_percentage() {
        let o = RuleOutcome { rule: "r".into(), action: None, checked: 200, violations: 3 };
        assert!((o.pass_rate() - 98.5).abs() < 1e-9);
    }
}
