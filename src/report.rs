//! The run report: `<lake>/_runs/<run_id>.json` and the summary table printed after a run.

use std::path::PathBuf;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::Result;
use crate::bronze::BronzeMetrics;
use crate::silver::{DailyMetrics, SilverMetrics};

/// Timing of one stage.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct StageTiming {
    /// Stage name (`bronze`, ...).
    pub stage: String,
    /// Wall time, milliseconds.
    pub millis: u64,
}

/// Everything a run did, written as JSON and summarised on the terminal.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct RunReport {
    /// Run id, also stamped on every row the run wrote.
    pub run_id: String,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// Total wall time, milliseconds.
    pub millis: u64,
    /// Landing folder.
    pub landing: PathBuf,
    /// Lake root.
    pub lake: PathBuf,
    /// Per-source bronze figures.
    pub bronze: Vec<BronzeMetrics>,
    /// Per-table silver figures, rule outcomes included.
    pub silver: Vec<SilverMetrics>,
    /// Daily features and anomaly flags.
    pub daily: DailyMetrics,
    /// Per-mart gold figures.
    pub gold: Vec<crate::gold::GoldMetrics>,
    /// Reconciliation checks (all passed, or the run would have failed).
    pub reconciliation: Vec<crate::gold::reconcile::Check>,
    /// Hash of the silver settings (rule actions, anomaly thresholds) the marts were built with.
    #[serde(default)]
    pub settings_fingerprint: String,
    /// Per-stage timings.
    pub stages: Vec<StageTiming>,
    /// The usage events' micro-batches (lateness, corrections, watermark).
    #[serde(default)]
    pub stream: Option<crate::stream::StreamReport>,
    /// What was published to Cassandra, when it is configured.
    #[serde(default)]
    pub publish: Option<crate::serving::cassandra::publish::PublishReport>,
}

/// Folder of the run reports, under the lake's root.
pub const RUNS_DIR: &str = "_runs";

impl RunReport {
    /// Writes the report as `<lake>/_runs/<run_id>.json`; returns where it went.
    pub async fn write(&self, lake: &crate::lake::Lake) -> Result<String> {
        let json = serde_json::to_vec_pretty(self)?;
        lake.put_file(&format!("{RUNS_DIR}/{}.json", self.run_id), json).await
    }

    /// The summary table: one row per source.
    pub fn summary(&self) -> String {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        t.set_header([
            "source",
            "files",
            "read",
            "written",
            "quarantined",
            "duplicates",
            "cast failures",
            "ms",
        ]);
        let mut total = BronzeMetrics { source: "total".into(), ..Default::default() };
        for m in &self.bronze {
            t.add_row(row(m));
            total.files += m.files;
            total.read += m.read;
            total.written += m.written;
            total.quarantined += m.quarantined;
            total.duplicates += m.duplicates;
            total.cast_failures.push(("*".into(), m.cast_failures.iter().map(|(_, n)| n).sum()));
            total.millis += m.millis;
        }
        t.add_row(row(&total));
        right_align(&mut t, 1..8);
        let mut s = Table::new();
        s.load_preset(UTF8_FULL_CONDENSED);
        s.set_header([
            "silver table",
            "bronze rows",
            "silver rows",
            "quarantined",
            "superseded",
            "warnings",
            "imputed",
            "ms",
        ]);
        for m in &self.silver {
            let warnings: u64 = m
                .rules
                .iter()
                .filter(|r| r.action == Some(crate::silver::rules::Action::Warn))
                .map(|r| r.violations)
                .sum();
            let imputed: u64 = m.imputed.iter().map(|(_, n)| n).sum();
            s.add_row(vec![
                Cell::new(&m.table),
                Cell::new(m.bronze_rows),
                Cell::new(m.rows),
                Cell::new(m.quarantined),
                Cell::new(m.superseded),
                Cell::new(warnings),
                Cell::new(imputed),
                Cell::new(m.millis),
            ]);
        }
        right_align(&mut s, 1..8);
        let mut q = Table::new();
        q.load_preset(UTF8_FULL_CONDENSED);
        q.set_header(["rule that fired", "action", "violations", "pass %"]);
        for o in self.silver.iter().flat_map(|m| &m.rules).filter(|o| o.violations > 0) {
            let action = o.action.map_or("warn".to_string(), |a| format!("{a:?}").to_lowercase());
            q.add_row(vec![
                Cell::new(&o.rule),
                Cell::new(action),
                Cell::new(o.violations),
                Cell::new(format!("{:.2}", o.pass_rate())),
            ]);
        }
        right_align(&mut q, 2..4);
        let mut g = Table::new();
        g.load_preset(UTF8_FULL_CONDENSED);
        g.set_header(["gold mart", "refresh", "rows computed", "updated", "inserted", "ms"]);
        for m in &self.gold {
            g.add_row(vec![
                Cell::new(&m.mart),
                Cell::new(&m.refresh),
                Cell::new(m.computed),
                Cell::new(m.updated),
                Cell::new(m.inserted),
                Cell::new(m.millis),
            ]);
        }
        right_align(&mut g, 2..6);
        let d = &self.daily;
        let mut reconciled = format!("reconciled: {} checks passed", self.reconciliation.len());
        if let Some(p) = &self.publish {
            reconciled.push_str(&format!(
                "\npublished to Cassandra: {} rows in {} tables ({} written, {} deleted) in {:.2} s",
                p.rows(),
                p.tables.len(),
                p.written(),
                p.deleted(),
                p.seconds
            ));
        }
        format!(
            "run {} — {} ms\n{t}\n{s}\n{q}\ndaily features: {} (org, date, service) rows; anomalies: {} (z-score {}, MAD {}, percentile {})\n(`cloudlake quality` shows every rule with examples)\n{g}\n{reconciled}",
            self.run_id, self.millis, d.rows, d.anomalies, d.zscore_flags, d.mad_flags, d.pctl_flags
        )
    }
}

fn row(m: &BronzeMetrics) -> Vec<Cell> {
    let casts: u64 = m.cast_failures.iter().map(|(_, n)| n).sum();
    vec![
        Cell::new(&m.source),
        Cell::new(m.files),
        Cell::new(m.read),
        Cell::new(m.written),
        Cell::new(m.quarantined),
        Cell::new(m.duplicates),
        Cell::new(casts),
        Cell::new(m.millis),
    ]
}

/// Right-aligns the numeric columns `columns` of a summary table.
pub(crate) fn right_align(table: &mut Table, columns: std::ops::Range<usize>) {
    for i in columns {
        if let Some(c) = table.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}
