//! JSON Lines landing reader (usage events).
//!
//! One JSON object per line. Blank lines are skipped; a line that is not valid UTF-8 or not a
//! JSON object is rejected with its raw text, and the file goes on. Declared fields are cast with
//! fallback (a number written as a string is still a number); unknown fields are kept, as a
//! JSON object, in `extra_json`, so a future schema version loses nothing. The object is parsed
//! in one pass with borrowed keys, without building a `serde_json::Value` per line.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{
    Column, IngestMeta, Landed, RULE_INVALID_UTF8, RULE_MALFORMED_JSON, RULE_MISSING_KEY, Reject,
    RowsBuilder, Scalar, cast::is_null_text,
};
use crate::Result;

/// Reads one JSONL file's bytes. `key` names the natural-key fields, which must be non-empty.
pub fn read_jsonl(
    bytes: &[u8],
    file: &str,
    columns: &[Column],
    key: &[&str],
    meta: &IngestMeta,
) -> Result<Landed> {
    let key_idx: Vec<usize> = key.iter().filter_map(|k| columns.iter().position(|c| c.name == *k)).collect();
    let mut rows = RowsBuilder::new(columns, true, bytes.len() / 200 + 1);
    let mut rejects = Vec::new();
    let mut read = 0u64;
    // One line's values, reused from line to line (every line borrows from `bytes`).
    let mut values = Vec::with_capacity(columns.len());
    for (n, raw) in super::lines(bytes).enumerate() {
        let line = n as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        read += 1;
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(_) => {
                let reason = "the line holds bytes that are not UTF-8".to_string();
                rejects.push(reject(RULE_INVALID_UTF8, reason, raw, file, line));
                continue;
            }
        };
        let unknown = match parse_line(text, columns, &mut values) {
            Ok(fields) => fields,
            Err(e) => {
                rejects.push(reject(RULE_MALFORMED_JSON, format!("not a JSON object: {e}"), raw, file, line));
                continue;
            }
        };
        if let Some(&i) = key_idx.iter().find(|&&i| match &values[i] {
            Scalar::Null => true,
            Scalar::Str(s) => is_null_text(s),
            _ => false,
        }) {
            let reason = format!("key field {} is missing or empty", columns[i].name);
            rejects.push(reject(RULE_MISSING_KEY, reason, raw, file, line));
            continue;
        }
        for (i, v) in values.iter().enumerate() {
            rows.push_scalar(i, v);
        }
        let extra = (!unknown.is_empty()).then(|| serde_json::Value::Object(unknown).to_string());
        rows.push_extra(extra.as_deref());
        rows.end_row(line, super::record_hash(raw));
    }
    let mut landed = rows.finish(file, meta)?;
    landed.rejects = rejects;
    landed.read = read;
    Ok(landed)
}

fn reject(rule: &'static str, reason: String, raw: &[u8], file: &str, line: u64) -> Reject {
    Reject { rule, reason, raw: String::from_utf8_lossy(raw).into_owned(), file: file.to_string(), line }
}

/// Parses one line into `values`, one scalar per declared column (null when absent), and
/// returns its unknown fields. `values` is cleared first: one vector serves every line of a file.
fn parse_line<'a>(
    text: &'a str,
    columns: &[Column],
    values: &mut Vec<Scalar<'a>>,
) -> serde_json::Result<serde_json::Map<String, serde_json::Value>> {
    values.clear();
    values.resize(columns.len(), Scalar::Null);
    let mut de = serde_json::Deserializer::from_str(text);
    let extra = LineSeed { columns, values }.deserialize(&mut de)?;
    de.end()?;
    Ok(extra)
}

struct LineSeed<'c, 'v, 'de> {
    columns: &'c [Column],
    values: &'v mut [Scalar<'de>],
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, '_, 'de> {
    type Value = serde_json::Map<String, serde_json::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, '_, 'de> {
    type Value = serde_json::Map<String, serde_json::Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let values = self.values;
        let mut extra = serde_json::Map::new();
        // Feeds write the declared fields in order: each key is first looked for right after
        // the previous one.
        let mut next = 0;
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            let found = match self.columns.get(next) {
                Some(c) if c.name == key => Some(next),
                _ => self.columns.iter().position(|c| c.name == key),
            };
            if let Some(i) = found {
                next = i + 1;
            }
            match found {
                Some(i) => {
                    values[i] = scalar(map.next_value::<&'de RawValue>()?).map_err(de::Error::custom)?
                }
                None => {
                    extra.insert(key.into_owned(), map.next_value::<serde_json::Value>()?);
                }
            }
        }
        Ok(extra)
    }
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON value as a scalar, from its text: strings without escapes and numbers borrow it (a
/// number stays the text it was written as, so a decimal parses exactly from it, without a
/// float in between); a number in exponent form is normalised through a float (`1e-05` becomes
/// `0.00001`, which every column type parses); nested values are kept as compact JSON text.
fn scalar(raw: &RawValue) -> serde_json::Result<Scalar<'_>> {
    let text = raw.get();
    Ok(match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Scalar::Str(Cow::Borrowed(&text[1..text.len() - 1])),
        Some(b'"') => Scalar::Str(Cow::Owned(serde_json::from_str::<String>(text)?)),
        Some(b'n') => Scalar::Null,
        Some(b't') => Scalar::Bool(true),
        Some(b'f') => Scalar::Bool(false),
        Some(b'[' | b'{') => Scalar::Nested(serde_json::from_str::<serde_json::Value>(text)?.to_string()),
        _ if text.contains(['e', 'E']) => {
            Scalar::Number(Cow::Owned(serde_json::from_str::<f64>(text)?.to_string()))
        }
        _ => Scalar::Number(Cow::Borrowed(text)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landing::{ColType, col};
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, TimestampMicrosecondType};

    const COLS: &[Column] = &[
        col("event_id", ColType::Utf8),
        col("timestamp", ColType::Timestamp),
        col("value", ColType::Float64),
        col("cost", ColType::Decimal(6)),
    ];

    fn read(text: &str) -> Landed {
        let meta = IngestMeta { run_id: "r".into(), ingest_ts_micros: 0 };
        read_jsonl(text.as_bytes(), "e.jsonl", COLS, &["event_id"], &meta).unwrap()
    }

    #[test]
    fn escapes_exponents_and_exact_decimals() {
        let l = read(concat!(
            r#"{"event_id":"a\"b","timestamp":1755395700000,"value":1e3,"cost":1E-05,"x":{"k": [1, 2]}}"#,
            "\n",
            r#"{"event_id":"c","timestamp":"2025-08-17T01:55:00Z","value":-0.5,"cost":0.123456}"#,
        ));
        assert!(l.rejects.is_empty(), "{:?}", l.rejects);
        let b = &l.batches[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "a\"b");
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 1000.0);
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(1), -0.5);
        let cost = b.column(3).as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        assert_eq!(cost.value(0), 10);
        assert_eq!(cost.value(1), 123_456);
        let extra = b.column_by_name(crate::landing::EXTRA_JSON).unwrap().as_string::<i32>();
        assert_eq!(extra.value(0), r#"{"x":{"k":[1,2]}}"#);
    }

    #[test]
    fn numbers_as_strings_nulls_and_unknown_fields() {
        let l = read(concat!(
            r#"{"event_id":"a","timestamp":"2025-08-17T01:55:00Z","value":"95.0","cost":0.9561,"new_field":[1,2]}"#,
            "\n",
            r#"{"event_id":"b","timestamp":1755395700000,"value":null,"cost":"1.5"}"#,
            "\r\n",
            "\n",
        ));
        assert_eq!(l.read, 2);
        assert!(l.rejects.is_empty());
        let b = &l.batches[0];
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 95.0);
        assert!(b.column(2).is_null(1));
        let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), ts.value(1));
        let extra = b.column_by_name("extra_json").unwrap().as_string::<i32>();
        assert_eq!(extra.value(0), r#"{"new_field":[1,2]}"#);
        assert!(extra.is_null(1));
        let cost = b.column(3).as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
        assert_eq!(cost.value(0), 956_100);
    }

    #[test]
    fn malformed_lines_are_rejected_and_the_file_goes_on() {
        let l = read(concat!(
            r#"{"event_id":"a"}"#,
            "\n",
            r#"{"event_id":"b","#,
            "\n",
            "[1,2,3]\n",
            r#"{"event_id":"c"} trailing"#,
            "\n",
            r#"{"timestamp":"2025-08-17T01:55:00Z"}"#,
            "\n",
            r#"{"event_id":""}"#,
            "\n",
            r#"{"event_id":"d"}"#,
            "\n",
        ));
        assert_eq!(l.read, 7);
        assert_eq!(l.batches[0].num_rows(), 2);
        let rules: Vec<_> = l.rejects.iter().map(|r| (r.rule, r.line)).collect();
        assert_eq!(
            rules,
            vec![
                (RULE_MALFORMED_JSON, 2),
                (RULE_MALFORMED_JSON, 3),
                (RULE_MALFORMED_JSON, 4),
                (RULE_MISSING_KEY, 5),
                (RULE_MISSING_KEY, 6),
            ]
        );
        assert_eq!(l.rejects[0].raw, r#"{"event_id":"b","#);
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let meta = IngestMeta { run_id: "r".into(), ingest_ts_micros: 0 };
        let l = read_jsonl(b"{\"event_id\":\"\xff\"}\n", "e", COLS, &["event_id"], &meta).unwrap();
        assert_eq!(l.rejects[0].rule, RULE_INVALID_UTF8);
    }

    #[test]
    fn escaped_keys_and_values_still_match() {
        let l = read(r#"{"event\u005fid":"a\"b","value":"1e2"}"#);
        let b = &l.batches[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "a\"b");
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 100.0);
    }

    #[test]
    fn keys_in_any_order_land_in_their_columns() {
        let l = read(concat!(
            r#"{"event_id":"a","timestamp":1755395700000,"value":1.5,"cost":2}"#,
            "\n",
            r#"{"cost":2,"x":1,"value":1.5,"timestamp":1755395700000,"event_id":"a"}"#,
            "\n",
            r#"{"value":9,"event_id":"a","value":1.5,"timestamp":1755395700000,"cost":2,"x":1}"#,
            "\n",
            r#"{"event_id":"b"}"#,
        ));
        assert!(l.rejects.is_empty(), "{:?}", l.rejects);
        let b = &l.batches[0];
        for (c, column) in COLS.iter().enumerate() {
            let first = b.column(c).slice(0, 1).to_data();
            assert_eq!(first, b.column(c).slice(1, 1).to_data(), "{}", column.name);
            assert_eq!(first, b.column(c).slice(2, 1).to_data(), "{}", column.name);
        }
        let extra = b.column_by_name(crate::landing::EXTRA_JSON).unwrap().as_string::<i32>();
        assert!(extra.is_null(0));
        assert_eq!((extra.value(1), extra.value(2)), (r#"{"x":1}"#, r#"{"x":1}"#));
        // Nothing of a line is left for the next one.
        assert!((1..COLS.len()).all(|c| b.column(c).is_null(3)) && extra.is_null(3));
    }

    #[test]
    fn uncastable_values_are_counted() {
        let l = read(r#"{"event_id":"a","timestamp":"not a time","value":"n/a","cost":{"x":1}}"#);
        assert_eq!(l.total_cast_failures(), 3);
    }
}
