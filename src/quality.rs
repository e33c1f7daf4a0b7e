//! `cloudlake quality`: the data-quality report of the latest run (SPEC section 5).
//!
//! Per source and rule: action, rows checked, violations and pass rate (from the run report),
//! the bronze rules' counts (records that could not be read, from the quarantine tables), and a
//! few example rejected or flagged records for every rule that fired.

use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::lake::{self, Lake};
use crate::report::RunReport;
use crate::silver::TABLES;
use crate::silver::rules::Action;
use crate::{Error, Result};

/// One rule's line in the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleLine {
    /// Source (bronze) name.
    pub source: String,
    /// Rule id.
    pub rule: String,
    /// `warn`, `quarantine` or `fail` (bronze rules always quarantine).
    pub action: Action,
    /// Rows checked.
    pub checked: u64,
    /// Rows violating.
    pub violations: u64,
    /// Percent passing.
    pub pass_rate: f64,
    /// Why a violation is wrong.
    pub reason: String,
    /// A few example records (JSON or raw text).
    pub examples: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QualityReport {
    /// The run it describes.
    pub run_id: String,
    /// Every rule, bronze rules first.
    pub rules: Vec<RuleLine>,
}

/// Loads the latest run report under `<lake>/_runs/`.
pub async fn latest_run(lake: &Lake) -> Result<RunReport> {
    use crate::report::RUNS_DIR;
    // Run ids start with the run's UTC time, so the greatest name is the latest run.
    let latest =
        lake.list_files(RUNS_DIR).await?.into_iter().filter(|n| n.ends_with(".json")).max().ok_or_else(
            || {
                Error::Usage(format!(
                    "no run report in {}/{RUNS_DIR}; run `cloudlake run` first",
                    lake.location()
                ))
            },
        )?;
    let relative = format!("{RUNS_DIR}/{latest}");
    let bytes = lake.read_file(&relative).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Usage(format!("{}/{relative} is not a cloudlake run report: {e}", lake.location()))
    })
}

/// Builds the report with up to `examples` example records per rule that fired.
pub async fn report(lake: &Lake, examples: usize) -> Result<QualityReport> {
    let run = latest_run(lake).await?;
    let ctx = lake::session();
    let names = lake.register_all(&ctx).await?;
    let mut lines = Vec::new();

    // Bronze: records that could not be read, all runs (the quarantine keeps them once each).
    for b in &run.bronze {
        let table = format!("quarantine_{}", b.source);
        if !names.contains(&table) {
            continue;
        }
        let counts = ctx
            .sql(&format!("SELECT rule_id, count(*) AS n, min(reason) AS reason FROM {table} WHERE stage = 'bronze' GROUP BY rule_id ORDER BY rule_id"))
            .await?
            .collect()
            .await?;
        let bronze_rejects: u64 = sample(
            &ctx,
            &format!("SELECT CAST(count(*) AS VARCHAR) FROM {table} WHERE stage = 'bronze'"),
            "",
        )
        .await?
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
        for batch in counts {
            let text = |i: usize| {
                datafusion::arrow::compute::cast(
                    batch.column(i),
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )
            };
            let (rule, n, reason) = (text(0)?, text(1)?, text(2)?);
            use datafusion::arrow::array::AsArray;
            for row in 0..batch.num_rows() {
                let rule = rule.as_string::<i32>().value(row).to_string();
                let violations: u64 = n.as_string::<i32>().value(row).parse().unwrap_or(0);
                let examples = sample(&ctx, &format!("SELECT record FROM {table} WHERE rule_id = $1 ORDER BY source_file, source_line LIMIT {examples}"), &rule).await?;
                // All-time figures on both sides: every record bronze kept plus every one it rejected.
                let kept =
                    sample(&ctx, &format!("SELECT CAST(count(*) AS VARCHAR) FROM bronze_{}", b.source), "")
                        .await?;
                let checked = kept.first().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) + bronze_rejects;
                lines.push(RuleLine {
                    source: b.source.clone(),
                    pass_rate: 100.0 * (1.0 - violations as f64 / checked.max(1) as f64),
                    rule,
                    action: Action::Quarantine,
                    checked,
                    violations,
                    reason: reason.as_string::<i32>().value(row).to_string(),
                    examples,
                });
            }
        }
    }

    // Silver: every declared rule, from the run report.
    for m in &run.silver {
        let Some(def) = TABLES.iter().find(|t| t.name == m.table) else { continue };
        for o in &m.rules {
            let reason = def.rules.iter().find(|r| r.id == o.rule).map_or("", |r| r.reason).to_string();
            let action = o.action.unwrap_or(Action::Warn);
            let examples = match (o.violations, action) {
                (0, _) | (_, Action::Fail) => Vec::new(),
                (_, Action::Quarantine) => {
                    let sql = format!(
                        "SELECT record FROM quarantine_{} WHERE rule_id = $1 ORDER BY source_file, source_line LIMIT {examples}",
                        def.bronze
                    );
                    sample(&ctx, &sql, &o.rule).await?
                }
                (_, Action::Warn) => {
                    let sql = format!(
                        "SELECT * EXCEPT (dq_flags) FROM silver_{} WHERE array_has(string_to_array(dq_flags, ','), $1) LIMIT {examples}",
                        m.table
                    );
                    json_rows(&ctx, &sql, &o.rule).await?
                }
            };
            lines.push(RuleLine {
                source: def.bronze.to_string(),
                rule: o.rule.clone(),
                action,
                checked: o.checked,
                violations: o.violations,
                pass_rate: o.pass_rate(),
                reason,
                examples,
            });
        }
    }
    Ok(QualityReport { run_id: run.run_id, rules: lines })
}

/// Runs `sql` with `$1` bound to `param` (when the SQL has it) and returns its first column as text.
async fn sample(ctx: &datafusion::prelude::SessionContext, sql: &str, param: &str) -> Result<Vec<String>> {
    use datafusion::arrow::array::AsArray;
    let mut out = Vec::new();
    for b in bind(ctx.sql(sql).await?, sql, param)?.collect().await? {
        let c = datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8)?;
        out.extend(c.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

async fn json_rows(ctx: &datafusion::prelude::SessionContext, sql: &str, param: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in bind(ctx.sql(sql).await?, sql, param)?.collect().await? {
        out.extend(crate::silver::rules::rows_json(&b)?);
    }
    Ok(out)
}

fn bind(
    df: datafusion::prelude::DataFrame,
    sql: &str,
    param: &str,
) -> Result<datafusion::prelude::DataFrame> {
    if !sql.contains("$1") {
        return Ok(df);
    }
    Ok(df.with_param_values(vec![datafusion::scalar::ScalarValue::Utf8(Some(param.to_string()))])?)
}

impl QualityReport {
    /// The report as text: a table of rules, then examples for those that fired.
    pub fn render(&self, all: bool) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header(["source", "rule", "action", "checked", "violations", "pass %"]);
        for l in self.rules.iter().filter(|l| all || l.violations > 0) {
            t.add_row(vec![
                Cell::new(&l.source),
                Cell::new(&l.rule),
                Cell::new(format!("{:?}", l.action).to_lowercase()),
                Cell::new(l.checked),
                Cell::new(l.violations),
                Cell::new(format!("{:.2}", l.pass_rate)),
            ]);
        }
        crate::report::right_align(&mut t, 3..6);
        let fired = self.rules.iter().filter(|l| l.violations > 0).count();
        let mut out = format!(
            "data quality of run {}: {} rules, {} with violations{}\n{t}\n",
            self.run_id,
            self.rules.len(),
            fired,
            if all { "" } else { " (--all lists every rule)" }
        );
        for l in self.rules.iter().filter(|l| !l.examples.is_empty()) {
            out += &format!("\n{} — {}\n", l.rule, l.reason);
            for e in &l.examples {
                let e: String = if e.chars().count() > 240 {
                    e.chars().take(240).chain("…".chars()).collect()
                } else {
                    e.clone()
                };
                out += &format!("  {e}\n");
            }
        }
        out
    }
}
