//! Serving: the five dashboard queries of SPEC section 7.
//!
//! [`queries`] defines them once (names, parameters, output columns); [`views`] the serving
//! tables both backends answer from; [`lake`] answers from the gold marts (the embedded default)
//! and [`cassandra`] publishes the views to Cassandra and answers from there.

pub mod cassandra;
pub mod lake;
pub mod queries;
pub mod views;

use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

pub use queries::{QueryName, QueryParams};

use crate::Result;

/// Days since the Unix epoch (Arrow's Date32).
pub fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

/// The date `n` days after the Unix epoch.
pub fn from_days(n: i32) -> NaiveDate {
    NaiveDate::default() + chrono::TimeDelta::days(i64::from(n))
}

/// Casts `batches` to `schema` (same columns in the same order), so every backend returns the
/// same Arrow types; an empty answer is one empty batch, so its columns are still known.
pub fn conform(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(vec![RecordBatch::new_empty(schema.clone())]);
    }
    batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        })
        .collect()
}
