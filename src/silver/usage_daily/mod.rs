//! `silver_usage_daily`: daily features per (org, usage_date, service) with the three anomaly
//! scores of [`super::anomalies`], every score and flag kept.
//!
//! Features: cost_usd, requests, cpu_hours, storage_gb_hours (sums of `value` by metric),
//! genai_tokens, carbon_kg, events. Every sum is an exact decimal (6 places), so the result does
//! not depend on the order rows are added in: re-runs and incremental merges give identical
//! marts. A rebuild aggregates with [`features_sql`] in DataFusion; a stream adds each
//! micro-batch to the series it holds in memory ([`DailySeries`]). The trailing baseline
//! statistics (medians, MAD, percentiles over a moving window) run in Rust.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;

use super::anomalies::{AnomalyConfig, Score, score_series};
use crate::Result;
use crate::bronze::MONEY_SCALE;

mod series;
pub use series::{Changed, DailySeries};

/// The daily feature query over `relation` (silver usage events, or a subset of them).
pub fn features_sql(relation: &str) -> String {
    format!(
        "SELECT org_id, usage_date, service,
        CAST(sum(cost_usd) AS DECIMAL(18, 6)) AS cost_usd,
        CAST(COALESCE(sum(CASE WHEN metric = 'requests' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS requests,
        CAST(COALESCE(sum(CASE WHEN metric = 'cpu_hours' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS cpu_hours,
        CAST(COALESCE(sum(CASE WHEN metric = 'storage_gb_hours' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS storage_gb_hours,
        COALESCE(sum(genai_tokens), 0) AS genai_tokens,
        CAST(COALESCE(sum(CAST(carbon_kg AS DECIMAL(18, 6))), 0) AS DECIMAL(18, 6)) AS carbon_kg,
        count(*) AS events
    FROM {relation}
    GROUP BY org_id, usage_date, service"
    )
}

/// Scores daily features (the rows of [`features_sql`], in any order, each (org, date, service)
/// once): the whole table when they cover every event (a full rebuild computes them a chunk of
/// dates at a time, see [`crate::silver::rebuild_events`]).
pub async fn score(
    ctx: &SessionContext,
    cfg: &AnomalyConfig,
    schema: SchemaRef,
    features: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    const FEATURES: &str = "__usage_daily_features";
    crate::lake::register_batches(ctx, FEATURES, schema, features)?;
    let scored =
        scored_sql(ctx, cfg, &format!("SELECT * FROM {FEATURES} ORDER BY org_id, service, usage_date")).await;
    let _ = ctx.deregister_table(FEATURES)?;
    scored
}

/// The schema of [`features_sql`]'s rows over silver events of schema `events` (planned over
/// an empty table, not run).
pub async fn features_schema(ctx: &SessionContext, events: SchemaRef) -> Result<SchemaRef> {
    const EMPTY: &str = "__usage_daily_empty_events";
    crate::lake::register_batches(ctx, EMPTY, events, vec![])?;
    let planned =
        ctx.sql(&features_sql(EMPTY)).await.map(|df| Arc::new(df.schema().as_arrow().clone()) as SchemaRef);
    let _ = ctx.deregister_table(EMPTY)?;
    Ok(planned?)
}

/// Scores the daily features `sql` returns, ordered by org, service and date, per series.
async fn scored_sql(
    ctx: &SessionContext,
    cfg: &AnomalyConfig,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx.sql(sql).await?;
    let features_schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    let features = concat_batches(&features_schema, &batches)?;
    let n = features.num_rows();

    let org = cast(features.column(0), &DataType::Utf8)?;
    let org = org.as_string::<i32>();
    let service = cast(features.column(2), &DataType::Utf8)?;
    let service = service.as_string::<i32>();
    let date = features.column(1).as_primitive::<Date32Type>();
    let cost = features.column(3).as_primitive::<Decimal128Type>();
    let scale = 10f64.powi(MONEY_SCALE as i32);
    // Series boundaries, then the series scored on every core (each independently).
    let mut bounds = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && org.value(end) == org.value(start) && service.value(end) == service.value(start) {
            end += 1;
        }
        bounds.push((start, end));
        start = end;
    }
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let share = bounds.len().div_ceil(cores).max(1);
    let scores: Vec<Score> = std::thread::scope(|scope| {
        let handles: Vec<_> = bounds
            .chunks(share)
            .map(|part| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    for &(start, end) in part {
                        let days: Vec<(i32, f64)> =
                            (start..end).map(|i| (date.value(i), cost.value(i) as f64 / scale)).collect();
                        out.extend(score_series(&days, cfg));
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    if scores.len() != n {
        return Err(crate::Error::Internal("a daily scoring thread failed".into()));
    }

    let extra = score_columns(&scores)?;
    let mut fields: Vec<Field> = features_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns: Vec<ArrayRef> = features.columns().to_vec();
    for (f, a) in extra {
        debug_assert_eq!(a.len(), n);
        fields.push(f);
        columns.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok((schema, if n > 0 { vec![batch] } else { vec![] }))
}

/// The score columns of `silver_usage_daily`, after its feature columns, for `scores` in row
/// order (one definition for a rebuild, a micro-batch and the in-memory series).
pub(crate) fn score_columns(scores: &[Score]) -> Result<Vec<(Field, ArrayRef)>> {
    let scale = 10f64.powi(MONEY_SCALE as i32);
    let baseline = Decimal128Array::from_iter(
        scores.iter().map(|s| s.baseline_mean.map(|m| (m * scale).round() as i128)),
    )
    .with_precision_and_scale(18, MONEY_SCALE)?;
    Ok(vec![
        (
            Field::new("baseline_days", DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(scores.iter().map(|s| s.baseline_days as i64))),
        ),
        (Field::new("baseline_cost_usd", DataType::Decimal128(18, MONEY_SCALE), true), Arc::new(baseline)),
        (
            Field::new("zscore", DataType::Float64, true),
            Arc::new(Float64Array::from_iter(scores.iter().map(|s| s.zscore))),
        ),
        (
            Field::new("mad_score", DataType::Float64, true),
            Arc::new(Float64Array::from_iter(scores.iter().map(|s| s.mad_score))),
        ),
        (
            Field::new("pctl_ratio", DataType::Float64, true),
            Arc::new(Float64Array::from_iter(scores.iter().map(|s| s.pctl_ratio))),
        ),
        (
            Field::new("zscore_flag", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.zscore_flag)))),
        ),
        (
            Field::new("mad_flag", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.mad_flag)))),
        ),
        (
            Field::new("pctl_flag", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.pctl_flag)))),
        ),
        (
            Field::new("methods_flagged", DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(scores.iter().map(|s| s.methods_flagged as i64))),
        ),
        (
            Field::new("is_anomaly", DataType::Boolean, false),
            Arc::new(BooleanArray::from_iter(scores.iter().map(|s| Some(s.is_anomaly)))),
        ),
    ])
}
