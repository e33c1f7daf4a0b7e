//! `silver_usage_daily`: daily features per (org, usage_date, service) with the three anomaly
//! scores of [`super::anomalies`], every score and flag kept.
//!
//! Features: cost_usd, requests, cpu_hours, storage_gb_hours (sums of `value` by metric),
//! genai_tokens, carbon_kg, events. Every sum is an exact decimal (6 places), so the result does
//! not depend on the order rows are added in: re-runs and incremental merges give identical marts. Aggregation runs in DataFusion; the trailing
//! baseline statistics (medians, MAD, percentiles over a moving window) run in Rust.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;

use super::anomalies::{AnomalyConfig, score_series};
use crate::Result;
use crate::bronze::MONEY_SCALE;

/// The daily feature query over `silver_usage_events`.
pub const FEATURES_SQL: &str = "
    SELECT org_id, usage_date, service,
        CAST(sum(cost_usd) AS DECIMAL(18, 6)) AS cost_usd,
        CAST(COALESCE(sum(CASE WHEN metric = 'requests' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS requests,
        CAST(COALESCE(sum(CASE WHEN metric = 'cpu_hours' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS cpu_hours,
        CAST(COALESCE(sum(CASE WHEN metric = 'storage_gb_hours' THEN CAST(value AS DECIMAL(18, 6)) END), 0) AS DECIMAL(18, 6)) AS storage_gb_hours,
        COALESCE(sum(genai_tokens), 0) AS genai_tokens,
        CAST(COALESCE(sum(CAST(carbon_kg AS DECIMAL(18, 6))), 0) AS DECIMAL(18, 6)) AS carbon_kg,
        count(*) AS events
    FROM silver_usage_events
    GROUP BY org_id, usage_date, service
    ORDER BY org_id, service, usage_date";

/// Builds the table: features from DataFusion, then scores per (org, service) series.
pub async fn build(ctx: &SessionContext, cfg: &AnomalyConfig) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx.sql(FEATURES_SQL).await?;
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

    let mut scores = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && org.value(end) == org.value(start) && service.value(end) == service.value(start) {
            end += 1;
        }
        let days: Vec<(i32, f64)> =
            (start..end).map(|i| (date.value(i), cost.value(i) as f64 / scale)).collect();
        scores.extend(score_series(&days, cfg));
        start = end;
    }

    let baseline = Decimal128Array::from_iter(
        scores.iter().map(|s| s.baseline_mean.map(|m| (m * scale).round() as i128)),
    )
    .with_precision_and_scale(18, MONEY_SCALE)?;
    let extra: Vec<(Field, ArrayRef)> = vec![
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
    ];
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
