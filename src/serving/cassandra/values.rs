//! Arrow values to CQL values and back, exactly: decimals keep every digit and their scale,
//! dates are day numbers on both sides.
//!
//! | Arrow | CQL |
//! |---|---|
//! | Utf8, Utf8View, LargeUtf8 | text |
//! | Date32 | date |
//! | Decimal128(p, s) | decimal (unscaled big-endian bytes, scale s) |
//! | Int64, UInt64, Int32 | bigint, bigint, int |
//! | Float64 | double |
//! | Boolean | boolean |

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::scalar::ScalarValue;
use scylla::value::{CqlDate, CqlDecimal, CqlValue, Row};

use crate::{Error, Result};

/// CQL's `date` counts days from 2^31 days before the Unix epoch.
const CQL_DATE_EPOCH: i64 = 1 << 31;

/// An Arrow Date32 day number as a CQL date.
pub fn cql_day(days: i32) -> CqlDate {
    CqlDate((i64::from(days) + CQL_DATE_EPOCH) as u32)
}

/// A CQL date as an Arrow Date32 day number.
pub fn arrow_day(d: CqlDate) -> i32 {
    (i64::from(d.0) - CQL_DATE_EPOCH) as i32
}

/// The value of `array[row]` as CQL (`None` for null).
pub fn to_cql(array: &ArrayRef, row: usize) -> Result<Option<CqlValue>> {
    let value = ScalarValue::try_from_array(array, row)?;
    if value.is_null() {
        return Ok(None);
    }
    Ok(Some(match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => {
            CqlValue::Text(s)
        }
        ScalarValue::Date32(Some(d)) => CqlValue::Date(cql_day(d)),
        ScalarValue::Decimal128(Some(v), _, s) => CqlValue::Decimal(decimal(v, s)),
        ScalarValue::Int64(Some(v)) => CqlValue::BigInt(v),
        ScalarValue::UInt64(Some(v)) => CqlValue::BigInt(
            i64::try_from(v).map_err(|_| Error::Internal(format!("{v} does not fit a CQL bigint")))?,
        ),
        ScalarValue::Int32(Some(v)) => CqlValue::Int(v),
        ScalarValue::Float64(Some(v)) => CqlValue::Double(v),
        ScalarValue::Boolean(Some(v)) => CqlValue::Boolean(v),
        other => {
            return Err(Error::Internal(format!("no CQL mapping for Arrow type {}", other.data_type())));
        }
    }))
}

/// A decimal from its unscaled value and scale, in the fewest big-endian bytes.
fn decimal(unscaled: i128, scale: i8) -> CqlDecimal {
    let bytes = unscaled.to_be_bytes();
    // Drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    CqlDecimal::from_signed_be_bytes_slice_and_exponent(&bytes[start..], i32::from(scale))
}

/// The unscaled value of a CQL decimal at `scale`, if it is exact there.
fn unscaled(d: &CqlDecimal, scale: i8) -> Option<i128> {
    let (bytes, exp) = d.as_signed_be_bytes_slice_and_exponent();
    if bytes.len() > 16 {
        return None;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0x00 };
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    let v = i128::from_be_bytes(buf);
    let shift = i32::from(scale) - exp;
    if shift >= 0 {
        v.checked_mul(10i128.checked_pow(shift as u32)?)
    } else {
        let div = 10i128.checked_pow((-shift) as u32)?;
        (v % div == 0).then_some(v / div)
    }
}

/// A CQL value as an Arrow scalar of type `ty`.
pub fn to_scalar(value: Option<&CqlValue>, ty: &DataType) -> Result<ScalarValue> {
    let mismatch = |v: &CqlValue| Error::Cassandra(format!("a {v:?} value cannot be read as {ty}"));
    let Some(v) = value else { return Ok(ScalarValue::try_from(ty)?) };
    Ok(match (ty, v) {
        (DataType::Utf8, CqlValue::Text(s) | CqlValue::Ascii(s)) => ScalarValue::Utf8(Some(s.clone())),
        (DataType::Utf8View, CqlValue::Text(s) | CqlValue::Ascii(s)) => {
            ScalarValue::Utf8View(Some(s.clone()))
        }
        (DataType::Date32, CqlValue::Date(CqlDate(d))) => ScalarValue::Date32(Some(arrow_day(CqlDate(*d)))),
        (DataType::Decimal128(p, s), CqlValue::Decimal(d)) => {
            ScalarValue::Decimal128(Some(unscaled(d, *s).ok_or_else(|| mismatch(v))?), *p, *s)
        }
        (DataType::Int64, CqlValue::BigInt(n)) => ScalarValue::Int64(Some(*n)),
        (DataType::Int64, CqlValue::Int(n)) => ScalarValue::Int64(Some(i64::from(*n))),
        (DataType::UInt64, CqlValue::BigInt(n)) => {
            ScalarValue::UInt64(Some(u64::try_from(*n).map_err(|_| mismatch(v))?))
        }
        (DataType::Int32, CqlValue::Int(n)) => ScalarValue::Int32(Some(*n)),
        (DataType::Float64, CqlValue::Double(x)) => ScalarValue::Float64(Some(*x)),
        (DataType::Boolean, CqlValue::Boolean(b)) => ScalarValue::Boolean(Some(*b)),
        _ => return Err(mismatch(v)),
    })
}

/// Rows read from Cassandra (columns in `schema` order) as one batch of `schema`.
pub fn rows_to_batch(schema: SchemaRef, rows: &[Row]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let scalars = rows
            .iter()
            .map(|r| to_scalar(r.columns.get(i).and_then(Option::as_ref), field.data_type()))
            .collect::<Result<Vec<_>>>()?;
        columns.push(if scalars.is_empty() {
            datafusion::arrow::array::new_empty_array(field.data_type())
        } else {
            ScalarValue::iter_to_array(scalars)?
        });
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, Decimal128Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn decimals_round_trip_exactly_with_their_scale() {
        for v in [
            0i128,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            123_456_789_012,
            -987_654_321_000_001,
            i64::MAX as i128 * 1000,
        ] {
            let d = decimal(v, 6);
            assert_eq!(unscaled(&d, 6), Some(v), "{v}");
        }
        assert_eq!(decimal(127, 6).as_signed_be_bytes_slice_and_exponent().0, &[0x7f]);
        assert_eq!(decimal(128, 6).as_signed_be_bytes_slice_and_exponent().0, &[0x00, 0x80]);
        assert_eq!(decimal(-128, 6).as_signed_be_bytes_slice_and_exponent().0, &[0x80]);
        // 1.5 at scale 1 read at scale 6, and an inexact downscale refused.
        assert_eq!(unscaled(&decimal(15, 1), 6), Some(1_500_000));
        assert_eq!(unscaled(&decimal(1_500_001, 6), 1), None);
    }

    #[test]
    fn arrow_rows_go_to_cql_and_back() {
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(20_300), None]));
        let money: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(-1_234_567), Some(42)]).with_precision_and_scale(18, 6).unwrap(),
        );
        let text: ArrayRef = Arc::new(StringArray::from(vec!["compute", "ai"]));
        let rows: Vec<Row> = (0..2)
            .map(|i| Row {
                columns: vec![
                    to_cql(&dates, i).unwrap(),
                    to_cql(&money, i).unwrap(),
                    to_cql(&text, i).unwrap(),
                ],
            })
            .collect();
        assert_eq!(rows[1].columns[0], None);
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
            datafusion::arrow::datatypes::Field::new("d", DataType::Date32, true),
            datafusion::arrow::datatypes::Field::new("m", DataType::Decimal128(18, 6), true),
            datafusion::arrow::datatypes::Field::new("t", DataType::Utf8, true),
        ]));
        let batch = rows_to_batch(schema, &rows).unwrap();
        assert_eq!(batch.column(0).as_ref(), dates.as_ref());
        assert_eq!(batch.column(1).as_ref(), money.as_ref());
        assert_eq!(batch.column(2).as_ref(), text.as_ref());
        assert!(to_scalar(Some(&CqlValue::Text("x".into())), &DataType::Int64).is_err());
    }
}
