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
//! [`build`] recomputes and overwrites every mart (a first run, or when a master, billing,
//! tickets or a setting changed). A local rebuild makes the event marts a bucket of daily rows
//! at a time instead, as the daily table is written ([`build_event_marts_of`]), and the others
//! with [`build_marts`]. Usage events reach gold one micro-batch at a time ([`crate::stream`]):
//! [`merge_event_marts`] takes the daily rows the batch changed — its (org, date, service) keys
//! plus the days whose trailing anomaly baseline they feed — and MERGEs them into the event marts
//! on their grain (or, when they are a quarter of the daily table or more,
//! [`rebuild_event_marts`] rewrites the event marts from the whole table), then
//! [`rebuild_always`] rebuilds `org_health` (one row per org); batch marts are left as they are.
//! The result equals a full rebuild (tested). [`reconcile`] checks the totals.

pub mod cost_anomaly_mart;
pub mod genai_tokens_by_org_date;
pub mod org_daily_usage_by_service;
pub mod org_health;
pub mod reconcile;
pub mod revenue_by_org_month;
pub mod tickets_by_org_date;

use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::lake::{Lake, Layer, Txn};
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

impl GoldMetrics {
    /// Adds a later build's figures for the same mart (a run's rebuild and micro-batches): a
    /// full build's rows replace the count (the mart now holds them), merged rows add up;
    /// `refresh` lists the kinds in order, e.g. `full+merge`.
    pub fn absorb(&mut self, other: &GoldMetrics) {
        if self.refresh.is_empty() || self.refresh == "unchanged" {
            self.refresh = other.refresh.clone();
        } else if other.refresh != "unchanged" && !self.refresh.ends_with(other.refresh.as_str()) {
            self.refresh = format!("{}+{}", self.refresh, other.refresh);
        }
        if other.refresh == "full" {
            self.computed = other.computed;
        } else {
            self.computed += other.computed;
        }
        self.updated += other.updated;
        self.inserted += other.inserted;
        self.millis += other.millis;
    }
}

/// One figure per mart, in build order, from the figures of the parts it was built in (the
/// buckets of a rebuild): rows and milliseconds add up.
pub fn in_build_order(parts: impl IntoIterator<Item = GoldMetrics>) -> Vec<GoldMetrics> {
    let mut out: Vec<GoldMetrics> = Vec::new();
    for part in parts {
        match out.iter_mut().find(|m| m.mart == part.mart) {
            Some(m) => {
                m.computed += part.computed;
                m.millis += part.millis;
            }
            None => out.push(part),
        }
    }
    out.sort_by_key(|m| MARTS.iter().position(|mart| mart.name == m.mart));
    out
}

/// Relation holding the affected daily rows of a micro-batch.
const AFFECTED: &str = "gold_affected_daily";

/// Recomputes and overwrites every mart from the silver tables registered in `ctx`; each commit
/// records `txn` when given (the stream batches the rebuild covers). Locally a mart's rows stream
/// from its query into its files; on a cluster they are collected from it, then written. Two marts
/// are built at a time (they only read silver), since one leaves a core idle.
pub async fn build(ctx: &SessionContext, lake: &Lake, txn: Option<&Txn>) -> Result<Vec<GoldMetrics>> {
    build_marts(ctx, lake, txn, |_| true).await
}

/// [`build`] for the marts `keep` keeps (in build order).
pub async fn build_marts(
    ctx: &SessionContext,
    lake: &Lake,
    txn: Option<&Txn>,
    keep: impl Fn(&Mart) -> bool,
) -> Result<Vec<GoldMetrics>> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(MARTS.iter().filter(|m| keep(m)))
        .map(|mart| build_one(ctx, lake, mart, txn))
        .buffered(2)
        .try_collect()
        .await
}

/// The event marts' rows for a bucket of `silver_usage_daily`'s rows (every event mart is
/// derived from the daily rows row by row, so a bucket's mart rows are the rows it contributes
/// to a build over the whole table), written with `mode` (a rebuild's first bucket replaces the
/// marts, the others add to them), each commit recording `txn`. The marts are computed and
/// written concurrently; each write ends before this returns, even after an error.
pub async fn build_event_marts_of(
    ctx: SessionContext,
    lake: Lake,
    daily: RecordBatch,
    mode: SaveMode,
    txn: Option<Txn>,
) -> Result<Vec<GoldMetrics>> {
    static BUCKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let relation =
        format!("__gold_daily_bucket_{}", BUCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    register_batches(&ctx, &relation, daily.schema(), vec![daily])?;
    let marts = MARTS.iter().filter(|m| m.scope == Scope::Events).map(|mart| async {
        let started = Instant::now();
        let (schema, batches) = collect(ctx.sql(&(mart.sql)(&relation)).await?).await?;
        let computed = batches.iter().map(|b| b.num_rows() as u64).sum();
        lake.save(Layer::Gold, mart.name, batches, schema, mart.partitions, mode, txn.as_ref()).await?;
        Ok(GoldMetrics {
            mart: mart.name.to_string(),
            refresh: "full".into(),
            computed,
            millis: started.elapsed().as_millis() as u64,
            ..Default::default()
        })
    });
    let built = futures::future::join_all(marts).await;
    let _ = ctx.deregister_table(&relation)?;
    built.into_iter().collect()
}

async fn build_one(ctx: &SessionContext, lake: &Lake, mart: &Mart, txn: Option<&Txn>) -> Result<GoldMetrics> {
    use tracing::Instrument;
    let started = Instant::now();
    let span = tracing::info_span!("stage", stage = "gold", mart = mart.name);
    async {
        let query = ctx.sql(&(mart.sql)("silver_usage_daily")).await?;
        let computed = if crate::cluster::of(ctx).is_none() {
            lake.overwrite_query(Layer::Gold, mart.name, query, mart.partitions, txn).await?
        } else {
            let (schema, batches) = collect(query).await?;
            let computed = batches.iter().map(|b| b.num_rows() as u64).sum();
            lake.save(Layer::Gold, mart.name, batches, schema, mart.partitions, SaveMode::Overwrite, txn)
                .await?;
            computed
        };
        let m = GoldMetrics {
            mart: mart.name.to_string(),
            refresh: "full".into(),
            computed,
            millis: started.elapsed().as_millis() as u64,
            ..Default::default()
        };
        tracing::info!(computed = m.computed, millis = m.millis, "Gold built.");
        Ok(m)
    }
    .instrument(span)
    .await
}

/// A micro-batch's gold step for the event marts: the daily rows it changed (`affected`, from
/// [`crate::silver::usage_daily::DailySeries`]) are turned into mart rows and MERGEd on each event
/// mart's grain, the marts concurrently; every commit records `txn`. A mart that already recorded
/// `txn` (a replay after a crash) is left as it is. Then [`rebuild_always`] follows, once
/// `silver_usage_daily` holds the batch.
pub async fn merge_event_marts(
    ctx: &SessionContext,
    lake: &Lake,
    affected: (datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>),
    txn: &Txn,
) -> Result<Vec<GoldMetrics>> {
    let (schema, batches) = affected;
    register_batches(ctx, AFFECTED, schema, batches)?;
    let marts = MARTS.iter().filter(|m| m.scope == Scope::Events).map(|mart| merge_one(ctx, lake, mart, txn));
    let out = futures::future::try_join_all(marts).await;
    let _ = ctx.deregister_table(AFFECTED)?;
    out
}

async fn merge_one(ctx: &SessionContext, lake: &Lake, mart: &Mart, txn: &Txn) -> Result<GoldMetrics> {
    let started = Instant::now();
    let mut m =
        GoldMetrics { mart: mart.name.to_string(), refresh: "unchanged".into(), ..Default::default() };
    if lake.txn_version(Layer::Gold, mart.name, &txn.app_id).await?.is_some_and(|v| v >= txn.version) {
        return Ok(m);
    }
    let batches = ctx.sql(&(mart.sql)(AFFECTED)).await?.collect().await?;
    m.computed = batches.iter().map(|b| b.num_rows() as u64).sum();
    if m.computed > 0 {
        if lake.open(Layer::Gold, mart.name).await?.is_some() {
            (m.updated, m.inserted) =
                lake.merge_txn(ctx, Layer::Gold, mart.name, batches, mart.grain, Some(txn)).await?;
        } else {
            let schema = batches[0].schema();
            lake.append_txn(Layer::Gold, mart.name, batches, schema, mart.partitions, txn).await?;
            m.inserted = m.computed;
        }
        m.refresh = "merge".into();
    }
    m.millis = started.elapsed().as_millis() as u64;
    tracing::debug!(mart = mart.name, computed = m.computed, millis = m.millis, "Gold merged.");
    Ok(m)
}

/// A micro-batch's gold step when it changed most of the daily table (unordered events touch
/// nearly every series): each event mart recomputed from the whole `silver_usage_daily` in `ctx`
/// (the stream's in-memory copy, already holding the batch) and overwritten, the marts
/// concurrently, each commit recording `txn`; a mart that already recorded it is left as it is.
/// Cheaper than reading each mart back to upsert most of its rows, and the same rows. Each mart's
/// rows stream from its query into its files: a mart is never held whole in memory.
pub async fn rebuild_event_marts(ctx: &SessionContext, lake: &Lake, txn: &Txn) -> Result<Vec<GoldMetrics>> {
    let marts = MARTS.iter().filter(|m| m.scope == Scope::Events).map(|mart| async move {
        let started = Instant::now();
        let mut m =
            GoldMetrics { mart: mart.name.to_string(), refresh: "unchanged".into(), ..Default::default() };
        if lake.txn_version(Layer::Gold, mart.name, &txn.app_id).await?.is_some_and(|v| v >= txn.version) {
            return Ok(m);
        }
        let query = ctx.sql(&(mart.sql)("silver_usage_daily")).await?;
        m.computed = lake.overwrite_query(Layer::Gold, mart.name, query, mart.partitions, Some(txn)).await?;
        m.refresh = "full".into();
        m.millis = started.elapsed().as_millis() as u64;
        Ok::<_, crate::Error>(m)
    });
    futures::future::try_join_all(marts).await
}

/// Rebuilds the marts that depend on everything (`org_health`) from the silver tables in `ctx`,
/// recording `txn`; skipped when they already recorded it. Batch marts are left as they are.
pub async fn rebuild_always(ctx: &SessionContext, lake: &Lake, txn: &Txn) -> Result<Vec<GoldMetrics>> {
    let mut out = Vec::new();
    for mart in MARTS.iter().filter(|m| m.scope != Scope::Events) {
        let started = Instant::now();
        let mut m =
            GoldMetrics { mart: mart.name.to_string(), refresh: "unchanged".into(), ..Default::default() };
        let applied =
            lake.txn_version(Layer::Gold, mart.name, &txn.app_id).await?.is_some_and(|v| v >= txn.version);
        if mart.scope == Scope::Always && !applied {
            let (schema, batches) = collect(ctx.sql(&(mart.sql)("silver_usage_daily")).await?).await?;
            m.computed = batches.iter().map(|b| b.num_rows() as u64).sum();
            lake.overwrite_txn(Layer::Gold, mart.name, batches, schema, mart.partitions, txn).await?;
            m.refresh = "full".into();
        }
        m.millis = started.elapsed().as_millis() as u64;
        out.push(m);
    }
    Ok(out)
}

/// True when every event mart already exists (an incremental build needs something to merge into).
pub async fn event_marts_exist(lake: &Lake) -> Result<bool> {
    for m in MARTS.iter().filter(|m| m.scope == Scope::Events) {
        if !lake.exists(Layer::Gold, m.name).await? {
            return Ok(false);
        }
    }
    Ok(true)
}
