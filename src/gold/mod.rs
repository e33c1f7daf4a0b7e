//! Gold: business marts (SPEC section 6), each in its own file with its grain and SQL.
//!
//! | mart | grain | scope |
//! |---|---|---|
//! | [`org_daily_usage_by_service`] | org_id, usage_date, service | events |
//! | [`cost_anomaly_mart`] | org_id, usage_date, service | events |
//! | [`genai_tokens_by_org_date`] | org_id, usage_date | events |
//! | [`revenue_by_org_month`] | org_id, month | batch |
//! | [`tickets_by_org_date`] | org_id, ticket_date, severity | batch |
//! | [`org_health`] | org_id | always |
//!
//! A full build overwrites every mart. When only new usage events arrived since the last run that
//! completed gold (no master, billing or ticket changed, same settings), the build is incremental: the (org, date,
//! service) keys the new events touched — plus the days whose trailing anomaly baseline they
//! feed — are recomputed from silver and MERGEd into the event marts on their grain; batch marts
//! are left as they are; `org_health` (one row per org) is rebuilt. The result equals a full
//! rebuild (tested). [`reconcile`] checks the totals after every build.

pub mod cost_anomaly_mart;
pub mod genai_tokens_by_org_date;
pub mod org_daily_usage_by_service;
pub mod org_health;
pub mod reconcile;
pub mod revenue_by_org_month;
pub mod tickets_by_org_date;

use std::time::Instant;

use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::lake::{Lake, Layer};
use crate::lake::{collect, register_batches};

/// When a mart is recomputed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// From usage events: MERGEd on touched keys in an incremental build.
    Events,
    /// From masters, billing or tickets: rebuilt in a full build, untouched by an events-only one.
    Batch,
    /// Rebuilt on every build (small and dependent on everything).
    Always,
}

/// A gold mart.
#[derive(Debug, Clone, Copy)]
pub struct Mart {
    /// Mart name (`gold/<name>`, SQL `gold_<name>`).
    pub name: &'static str,
    /// Grain: the columns that identify a row (the MERGE key).
    pub grain: &'static [&'static str],
    /// How it is refreshed.
    pub scope: Scope,
    /// SQL of the mart, given the relation holding the daily features to read
    /// (`silver_usage_daily`, or only its affected rows in an incremental build).
    pub sql: fn(&str) -> String,
    /// Partition columns.
    pub partitions: &'static [&'static str],
}

/// Every mart, in build order.
pub const MARTS: &[Mart] = &[
    org_daily_usage_by_service::MART,
    cost_anomaly_mart::MART,
    genai_tokens_by_org_date::MART,
    revenue_by_org_month::MART,
    tickets_by_org_date::MART,
    org_health::MART,
];

/// How to build gold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Recompute and overwrite every mart.
    Full,
    /// Recompute what the events ingested after a run touched, and MERGE it.
    Incremental {
        /// The last run that completed gold: events of later runs (this one, or one that
        /// crashed before gold) are the change.
        since_run_id: String,
        /// Trailing anomaly window: days after a touched day whose scores it feeds.
        window_days: i32,
    },
}

/// What the build did for one mart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GoldMetrics {
    /// Mart name.
    pub mart: String,
    /// `full`, `merge` or `unchanged`.
    pub refresh: String,
    /// Rows computed (all rows for a full build, touched rows for a merge).
    pub computed: u64,
    /// Rows updated by a merge.
    pub updated: u64,
    /// Rows inserted by a merge.
    pub inserted: u64,
    /// Wall time, milliseconds.
    pub millis: u64,
}

/// Relation holding the affected daily rows in an incremental build.
const AFFECTED: &str = "gold_affected_daily";

/// Builds the marts from the silver tables registered in `ctx`.
pub async fn build(ctx: &SessionContext, lake: &Lake, mode: &Mode) -> Result<Vec<GoldMetrics>> {
    if let Mode::Incremental { since_run_id, window_days } = mode {
        let sql = format!(
            "SELECT d.* FROM silver_usage_daily d
             WHERE EXISTS (SELECT 1 FROM (SELECT DISTINCT org_id, usage_date, service FROM silver_usage_events WHERE ingest_run_id > $1) t
                           WHERE t.org_id = d.org_id AND (t.service IS NOT DISTINCT FROM d.service)
                             AND d.usage_date >= t.usage_date AND d.usage_date <= t.usage_date + INTERVAL '{window_days} days')"
        );
        let df = ctx
            .sql(&sql)
            .await?
            .with_param_values(vec![datafusion::scalar::ScalarValue::Utf8(Some(since_run_id.clone()))])?;
        let (schema, batches) = collect(df).await?;
        register_batches(ctx, AFFECTED, schema, batches)?;
    }
    let mut out = Vec::with_capacity(MARTS.len());
    for mart in MARTS {
        let started = Instant::now();
        let _span = tracing::info_span!("stage", stage = "gold", mart = mart.name).entered();
        let mut m = GoldMetrics { mart: mart.name.to_string(), ..Default::default() };
        match (mode, mart.scope) {
            (Mode::Incremental { .. }, Scope::Batch) => m.refresh = "unchanged".into(),
            (Mode::Incremental { .. }, Scope::Events) => {
                let batches = ctx.sql(&(mart.sql)(AFFECTED)).await?.collect().await?;
                m.computed = batches.iter().map(|b| b.num_rows() as u64).sum();
                (m.updated, m.inserted) =
                    lake.merge(ctx, Layer::Gold, mart.name, batches, mart.grain).await?;
                m.refresh = "merge".into();
            }
            _ => {
                let (schema, batches) = collect(ctx.sql(&(mart.sql)("silver_usage_daily")).await?).await?;
                m.computed = batches.iter().map(|b| b.num_rows() as u64).sum();
                lake.overwrite(Layer::Gold, mart.name, batches, schema, mart.partitions).await?;
                m.refresh = "full".into();
            }
        }
        m.millis = started.elapsed().as_millis() as u64;
        tracing::info!(refresh = %m.refresh, computed = m.computed, updated = m.updated, inserted = m.inserted, millis = m.millis, "Gold built.");
        out.push(m);
    }
    let _ = ctx.deregister_table(AFFECTED)?;
    Ok(out)
}

/// True when every event mart already exists (an incremental build needs something to merge into).
pub fn event_marts_exist(lake: &Lake) -> bool {
    MARTS
        .iter()
        .filter(|m| m.scope == Scope::Events)
        .all(|m| lake.table_path(Layer::Gold, m.name).join("_delta_log").is_dir())
}
