//! Cast with fallback: turns raw text or JSON scalars into typed Arrow values.
//!
//! SPEC section 4: bronze uses declared types, never inferred ones, and a value that will not cast
//! becomes null and is *counted*, never a crash. [`ColumnBuilder::push_text`] returns whether the
//! cast succeeded so that callers count failures per column.
//!
//! Accepted spellings (what real feeds bring):
//! - null: empty or blank text, `null`, `NULL`, `None`, JSON null;
//! - booleans: `true/false`, `True/False`, `1/0`, `yes/no`, `t/f`;
//! - integers: `12`, `"12"`, `12.0` (a whole float);
//! - decimals: plain or scientific (`8.9e-05`), parsed from text, never through a float sum;
//!   digits beyond the declared scale are truncated by Arrow's `parse_decimal`;
//! - timestamps: RFC 3339 with `Z` or an offset, without offset (taken as UTC),
//!   `YYYY-MM-DD HH:MM:SS`, a bare date (midnight UTC), or epoch time as digits (12 or more digits
//!   are milliseconds, 9 to 11 are seconds);
//! - dates: `YYYY-MM-DD` or any timestamp above (its UTC date).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::kernels::cast_utils::{Parser, string_to_datetime};
use datafusion::arrow::datatypes::{DataType, Date32Type, Decimal128Type, TimeUnit};

/// Precision of every Decimal128 column: 18 digits (stored as a 64-bit integer in Parquet).
pub const DECIMAL_PRECISION: u8 = 18;

/// The declared type of a landing column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// Text, kept as written (bronze does not trim or lower-case: that is silver's job).
    Utf8,
    /// 64-bit integer.
    Int64,
    /// 64-bit float, for measurements that are not money.
    Float64,
    /// Boolean.
    Bool,
    /// Calendar date.
    Date,
    /// Instant in UTC, microsecond precision (Delta `timestamp`).
    Timestamp,
    /// Exact decimal with this many fractional digits (money, rates).
    Decimal(i8),
}

impl ColType {
    /// The Arrow type the column is stored as.
    pub fn data_type(self) -> DataType {
        match self {
            ColType::Utf8 => DataType::Utf8,
            ColType::Int64 => DataType::Int64,
            ColType::Float64 => DataType::Float64,
            ColType::Bool => DataType::Boolean,
            ColType::Date => DataType::Date32,
            ColType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColType::Decimal(scale) => DataType::Decimal128(DECIMAL_PRECISION, scale),
        }
    }
}

/// A JSON scalar as found in a landing record, borrowed from the line where possible.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// JSON null, or the key is absent.
    Null,
    /// JSON boolean.
    Bool(bool),
    /// JSON number, as its text (exact: no float round trip for decimals).
    Number(std::borrow::Cow<'a, str>),
    /// JSON string.
    Str(std::borrow::Cow<'a, str>),
    /// An array or object where a scalar was expected (kept as JSON text).
    Nested(String),
}

/// Returns true when `s` spells a null.
pub fn is_null_text(s: &str) -> bool {
    // Most values are longer than any null spelling and start and end with a visible ASCII
    // character, which no trim removes: they are answered without trimming (every value of
    // every landed text column comes through here).
    let visible = |b: Option<&u8>| b.is_some_and(|b| (b'!'..=b'~').contains(b));
    if s.len() > 4 && visible(s.as_bytes().first()) && visible(s.as_bytes().last()) {
        return false;
    }
    matches!(s.trim(), "" | "null" | "NULL" | "None" | "none")
}

/// Parses a boolean spelling; `None` when it is not one.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" => Some(true),
        "false" | "f" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// Parses an integer, accepting a whole float such as `12.0`.
pub fn parse_i64(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let f = s.parse::<f64>().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// Parses a float; rejects NaN and infinities, which no measurement here can be.
pub fn parse_f64(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Parses an exact decimal into the mantissa at `scale`.
pub fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
    datafusion::arrow::compute::kernels::cast_utils::parse_decimal::<Decimal128Type>(
        s.trim(),
        DECIMAL_PRECISION,
        scale,
    )
    .ok()
}

/// Parses a timestamp in any accepted spelling into microseconds since the epoch, UTC.
pub fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if (9..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
        return epoch_number_to_micros(s.parse::<i64>().ok()?);
    }
    if let Some(micros) = rfc3339_utc_seconds(s) {
        return Some(micros);
    }
    let dt = string_to_datetime(&chrono::Utc, s).ok()?;
    Some(dt.timestamp_micros())
}

/// The feeds' own spelling, `YYYY-MM-DDTHH:MM:SSZ`, read straight from its digits: the general
/// parser took about 1 % of a scale-100 run's CPU for it. `None` for any other spelling or an
/// invalid date or time, which the general parser then reads (or rejects) as before.
fn rfc3339_utc_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    const SEPARATORS: [(usize, u8); 6] =
        [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'Z')];
    if b.len() != 20 || SEPARATORS.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time = chrono::NaiveTime::from_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(date.and_time(time).and_utc().timestamp_micros())
}

/// Interprets an epoch number: milliseconds from 10^11 up (12 or more digits: after 1973-03-03 in
/// milliseconds), seconds below (9 to 11 digits: any date from 1973 to 5138 in seconds).
pub fn epoch_number_to_micros(n: i64) -> Option<i64> {
    if n.unsigned_abs() >= 100_000_000_000 { n.checked_mul(1_000) } else { n.checked_mul(1_000_000) }
}

/// Parses a date (days since the epoch), also from a full timestamp.
pub fn parse_date_days(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Some(d) = Date32Type::parse(s) {
        return Some(d);
    }
    parse_timestamp_micros(s).map(|us| us.div_euclid(86_400_000_000) as i32)
}

/// Builds one typed column, counting values that would not cast.
pub enum ColumnBuilder {
    /// Text.
    Utf8(StringBuilder),
    /// Integer.
    Int64(Int64Builder),
    /// Float.
    Float64(Float64Builder),
    /// Boolean.
    Bool(BooleanBuilder),
    /// Date.
    Date(Date32Builder),
    /// Timestamp (UTC).
    Timestamp(TimestampMicrosecondBuilder),
    /// Decimal at the given scale.
    Decimal(Decimal128Builder, i8),
}

impl ColumnBuilder {
    /// An empty builder for `ty` with room for `capacity` rows.
    pub fn new(ty: ColType, capacity: usize) -> Self {
        match ty {
            ColType::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(capacity, capacity * 16)),
            ColType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(capacity)),
            ColType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(capacity)),
            ColType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColType::Timestamp => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            ColType::Decimal(scale) => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_precision_and_scale(DECIMAL_PRECISION, scale)
                    .expect("18 digits and a scale below 18 are a valid Decimal128"),
                scale,
            ),
        }
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        match self {
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Decimal(b, _) => b.append_null(),
        }
    }

    /// Appends a value given as text. Returns `false` when non-null text did not cast (a null
    /// was appended instead).
    pub fn push_text(&mut self, s: &str) -> bool {
        if is_null_text(s) {
            self.push_null();
            return true;
        }
        match self {
            ColumnBuilder::Utf8(b) => {
                b.append_value(s);
                true
            }
            ColumnBuilder::Int64(b) => append_opt(b, parse_i64(s)),
            ColumnBuilder::Float64(b) => append_opt(b, parse_f64(s)),
            ColumnBuilder::Bool(b) => append_opt_bool(b, parse_bool(s)),
            ColumnBuilder::Date(b) => append_opt(b, parse_date_days(s)),
            ColumnBuilder::Timestamp(b) => append_opt(b, parse_timestamp_micros(s)),
            ColumnBuilder::Decimal(b, scale) => {
                let v = parse_decimal(s, *scale);
                append_opt(b, v)
            }
        }
    }

    /// Appends a JSON scalar. Returns `false` when a non-null value did not cast.
    pub fn push_scalar(&mut self, v: &Scalar<'_>) -> bool {
        match (v, &mut *self) {
            (Scalar::Null, _) => {
                self.push_null();
                true
            }
            // A JSON number in a timestamp column is epoch time, not text to parse.
            (Scalar::Number(n), ColumnBuilder::Timestamp(b)) => {
                let micros = parse_i64(n).and_then(epoch_number_to_micros);
                append_opt(b, micros)
            }
            (Scalar::Bool(x), ColumnBuilder::Bool(b)) => {
                b.append_value(*x);
                true
            }
            (Scalar::Bool(x), _) => self.push_text(if *x { "true" } else { "false" }),
            (Scalar::Number(s) | Scalar::Str(s), _) => self.push_text(s),
            (Scalar::Nested(s), ColumnBuilder::Utf8(b)) => {
                b.append_value(s);
                true
            }
            (Scalar::Nested(_), _) => {
                self.push_null();
                false
            }
        }
    }

    /// Finishes the column.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, _) => Arc::new(b.finish()),
        }
    }
}

fn append_opt<T: datafusion::arrow::datatypes::ArrowPrimitiveType>(
    b: &mut datafusion::arrow::array::PrimitiveBuilder<T>,
    v: Option<T::Native>,
) -> bool {
    b.append_option(v);
    v.is_some()
}

fn append_opt_bool(b: &mut BooleanBuilder, v: Option<bool>) -> bool {
    b.append_option(v);
    v.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_755_395_700_000_000; // 2025-08-17T01:55:00Z

    #[test]
    fn timestamps_in_every_accepted_spelling_land_on_the_same_instant() {
        for s in [
            "2025-08-17T01:55:00Z",
            "2025-08-17T01:55:00+00:00",
            "2025-08-17T03:55:00+02:00",
            "2025-08-16T22:55:00-03:00",
            "2025-08-17T01:55:00",
            "2025-08-17 01:55:00",
            " 2025-08-17 01:55:00 ",
            "1755395700000",
            "1755395700",
        ] {
            assert_eq!(parse_timestamp_micros(s), Some(T0), "{s}");
        }
        assert_eq!(parse_timestamp_micros("2025-08-17"), Some(1_755_388_800_000_000));
        assert_eq!(parse_timestamp_micros("17/08/2025"), None);
        assert_eq!(parse_timestamp_micros("yesterday"), None);
    }

    #[test]
    fn the_feeds_own_timestamp_spelling_reads_as_the_general_parser_reads_it() {
        let mut checked = 0;
        for (y, mo, d) in
            [(2025, 8, 17), (2024, 2, 29), (2025, 2, 29), (2025, 13, 1), (1999, 12, 31), (2025, 4, 31)]
        {
            for (h, mi, sec) in [(0, 0, 0), (23, 59, 59), (24, 0, 0), (12, 60, 0), (12, 0, 60), (1, 55, 0)] {
                let s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z");
                let general = string_to_datetime(&chrono::Utc, &s).ok().map(|t| t.timestamp_micros());
                // The fast path answers only what the general parser accepts, and the same way.
                if let Some(fast) = rfc3339_utc_seconds(&s) {
                    assert_eq!(Some(fast), general, "{s}");
                    checked += 1;
                }
                assert_eq!(parse_timestamp_micros(&s), general, "{s}");
            }
        }
        assert_eq!(checked, 9, "three valid dates at three valid times");
        for s in
            ["2025-08-17T01:55:0aZ", "2025-08-17t01:55:00Z", "+025-08-17T01:55:00Z", "2025-08-17T01:55:00z"]
        {
            assert_eq!(rfc3339_utc_seconds(s), None, "{s}");
        }
        assert_eq!(rfc3339_utc_seconds("2025-08-17T01:55:00Z"), Some(T0));
    }

    #[test]
    fn null_spellings_with_any_whitespace_around_them_are_null() {
        for s in
            ["", " ", "null", "NULL", "None", "none", " null ", "\tNone\n", "\u{a0}null\u{a0}", "\u{b}none"]
        {
            assert!(is_null_text(s), "{s:?}");
        }
        for s in ["nul", "nulls", "null.", "x null", "org_1", "0", "\u{a0}org\u{a0}", " value "] {
            assert!(!is_null_text(s), "{s:?}");
        }
    }

    #[test]
    fn epoch_numbers_are_millis_when_long_and_seconds_when_short() {
        assert_eq!(epoch_number_to_micros(1_755_395_700_000), Some(T0));
        assert_eq!(epoch_number_to_micros(1_755_395_700), Some(T0));
    }

    #[test]
    fn decimals_are_exact_and_accept_scientific_notation() {
        assert_eq!(parse_decimal("1133.34", 6), Some(1_133_340_000));
        assert_eq!(parse_decimal("-0.0123", 6), Some(-12_300));
        assert_eq!(parse_decimal("8.9e-05", 6), Some(89));
        assert_eq!(parse_decimal("abc", 6), None);
    }

    #[test]
    fn integers_accept_whole_floats_only() {
        assert_eq!(parse_i64("12"), Some(12));
        assert_eq!(parse_i64("12.0"), Some(12));
        assert_eq!(parse_i64("12.5"), None);
        assert_eq!(parse_i64("x"), None);
    }

    #[test]
    fn booleans_accept_python_and_sql_spellings() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("false"), Some(false));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn builder_counts_failed_casts_and_stores_null() {
        let mut b = ColumnBuilder::new(ColType::Float64, 4);
        assert!(b.push_text("1.5"));
        assert!(b.push_text(""));
        assert!(!b.push_text("n/a"));
        assert!(b.push_scalar(&Scalar::Str("95.0".into())));
        let a = b.finish();
        assert_eq!(a.len(), 4);
        assert_eq!(a.null_count(), 2);
    }

    #[test]
    fn json_number_in_timestamp_column_is_epoch() {
        let mut b = ColumnBuilder::new(ColType::Timestamp, 1);
        assert!(b.push_scalar(&Scalar::Number("1755395700000".into())));
    }

    #[test]
    fn dates_accept_timestamps() {
        assert_eq!(parse_date_days("2025-08-17"), Some(20317));
        assert_eq!(parse_date_days("2025-08-17T23:59:59Z"), Some(20317));
        assert_eq!(parse_date_days("2025-13-01"), None);
    }
}
