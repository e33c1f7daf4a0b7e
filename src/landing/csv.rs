//! CSV landing reader.
//!
//! Handles what real CSV exports bring: a UTF-8 byte-order mark, CRLF line ends, quoted fields
//! with commas or newlines, blank lines (skipped, not records), header names in another order or
//! case (columns are matched by trimmed, lower-cased name; unknown columns are ignored, absent
//! ones are null). A row with the wrong number of fields, bytes that are not UTF-8 or an empty
//! natural key is rejected with its raw text; the rest of the file goes on.

use super::{
    Column, IngestMeta, Landed, RULE_FIELD_COUNT, RULE_INVALID_UTF8, RULE_MISSING_KEY, Reject, RowsBuilder,
    cast::is_null_text,
};
use crate::Result;

/// Reads one CSV file's bytes. `file` is the name reported in lineage and rejects; `key` lists
/// the natural-key columns, which must be present and non-empty.
pub fn read_csv(
    bytes: &[u8],
    file: &str,
    columns: &[Column],
    key: &[&str],
    meta: &IngestMeta,
) -> Result<Landed> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut rejects = Vec::new();
    let mut read = 0u64;

    // Header: map each declared column to its position in the file.
    let header: Vec<String> = match reader.read_byte_record(&mut record) {
        Ok(true) => record
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().trim_matches('"').to_ascii_lowercase())
            .collect(),
        _ => Vec::new(),
    };
    let positions: Vec<Option<usize>> =
        columns.iter().map(|c| header.iter().position(|h| h == c.name)).collect();
    let key_positions: Vec<(&str, Option<usize>)> =
        key.iter().map(|k| (*k, header.iter().position(|h| h == k))).collect();

    let mut rows = RowsBuilder::new(columns, false, bytes.len() / 64 + 1);
    let mut hash_input: Vec<u8> = Vec::with_capacity(256);
    // Line numbers are counted from byte offsets: the csv crate's own counter skips blank lines.
    let mut lines = LineCounter::default();
    loop {
        let start = reader.position().byte() as usize;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // The csv crate only fails here on malformed quoting it cannot recover from.
                let end = (reader.position().byte() as usize).min(bytes.len());
                read += 1;
                let line = lines.line_at(bytes, start);
                rejects.push(reject(
                    RULE_FIELD_COUNT,
                    format!("unreadable CSV row: {e}"),
                    &bytes[start..end],
                    file,
                    line,
                ));
                continue;
            }
        }
        let end = (reader.position().byte() as usize).min(bytes.len());
        // The record's position still includes the blank lines the reader skipped before it.
        let mut record_start = record.position().map_or(start, |p| p.byte() as usize).min(end);
        while record_start < end && matches!(bytes[record_start], b'\r' | b'\n') {
            record_start += 1;
        }
        let raw = &bytes[record_start..end];
        let line = lines.line_at(bytes, record_start);
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue; // a blank line is not a record
        }
        read += 1;
        if record.len() != header.len() {
            let reason = format!("expected {} fields as in the header, found {}", header.len(), record.len());
            rejects.push(reject(RULE_FIELD_COUNT, reason, raw, file, line));
            continue;
        }
        let mut fields: Vec<&str> = Vec::with_capacity(header.len());
        let mut utf8_ok = true;
        for f in record.iter() {
            match std::str::from_utf8(f) {
                Ok(s) => fields.push(s),
                Err(_) => {
                    utf8_ok = false;
                    break;
                }
            }
        }
        if !utf8_ok {
            rejects.push(reject(
                RULE_INVALID_UTF8,
                "the row holds bytes that are not UTF-8".into(),
                raw,
                file,
                line,
            ));
            continue;
        }
        if let Some((k, pos)) = key_positions.iter().find(|(_, p)| p.is_none_or(|i| is_null_text(fields[i])))
        {
            let reason = match pos {
                None => format!("key column {k} is missing from the header"),
                Some(_) => format!("key column {k} is empty"),
            };
            rejects.push(reject(RULE_MISSING_KEY, reason, raw, file, line));
            continue;
        }
        hash_input.clear();
        for (i, pos) in positions.iter().enumerate() {
            let value = pos.map_or("", |p| fields[p]);
            rows.push_text(i, value);
            hash_input.extend_from_slice(value.as_bytes());
            hash_input.push(0x1f);
        }
        rows.end_row(line, super::record_hash(&hash_input));
    }
    let mut landed = rows.finish(file, meta)?;
    landed.rejects = rejects;
    landed.read = read;
    Ok(landed)
}

/// Converts increasing byte offsets into 1-based line numbers.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    newlines: u64,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], offset: usize) -> u64 {
        let offset = offset.min(bytes.len());
        if offset > self.offset {
            self.newlines += bytes[self.offset..offset].iter().filter(|b| **b == b'\n').count() as u64;
            self.offset = offset;
        }
        self.newlines + 1
    }
}

fn reject(rule: &'static str, reason: String, raw: &[u8], file: &str, line: u64) -> Reject {
    let raw = String::from_utf8_lossy(raw);
    Reject { rule, reason, raw: raw.trim_end_matches(['\r', '\n']).to_string(), file: file.to_string(), line }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landing::{ColType, col};
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;

    const COLS: &[Column] = &[
        col("id", ColType::Utf8),
        col("amount", ColType::Decimal(6)),
        col("n", ColType::Int64),
        col("note", ColType::Utf8),
    ];

    fn meta() -> IngestMeta {
        IngestMeta { run_id: "r1".into(), ingest_ts_micros: 0 }
    }

    fn read(text: &[u8]) -> Landed {
        read_csv(text, "f.csv", COLS, &["id"], &meta()).unwrap()
    }

    #[test]
    fn bom_crlf_quoted_commas_and_blank_lines() {
        let l = read(b"\xEF\xBB\xBFid,amount,n,note\r\na,1.50,2,\"x, y\"\r\n\r\nb,2,3,z\r\n");
        assert_eq!(l.read, 2);
        assert!(l.rejects.is_empty());
        let b = &l.batches[0];
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(3).as_string::<i32>().value(0), "x, y");
        assert_eq!(b.column(2).as_primitive::<Int64Type>().value(1), 3);
    }

    #[test]
    fn header_is_matched_by_name_in_any_order_and_case() {
        let l = read(b" N ,ID,Note,Amount,unknown\n7,a,hi,3.25,zzz\n");
        let b = &l.batches[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "a");
        assert_eq!(b.column(2).as_primitive::<Int64Type>().value(0), 7);
    }

    #[test]
    fn wrong_field_count_missing_key_and_bad_utf8_are_rejected_with_raw_text() {
        let l = read(b"id,amount,n,note\na,1,2,x\nb,1,2\nc,1,2,x,extra\n,1,2,x\nd,1,2,\xff\xfe\ne,1,2,ok\n");
        assert_eq!(l.read, 6);
        assert_eq!(l.batches[0].num_rows(), 2);
        let rules: Vec<_> = l.rejects.iter().map(|r| (r.rule, r.line)).collect();
        assert_eq!(
            rules,
            vec![(RULE_FIELD_COUNT, 3), (RULE_FIELD_COUNT, 4), (RULE_MISSING_KEY, 5), (RULE_INVALID_UTF8, 6)]
        );
        // Blank lines still count as lines of the file.
        let blank = read(b"id,amount,n,note\n\n\r\nb,1,2\n");
        assert_eq!(blank.rejects[0].line, 4);
        assert_eq!(blank.rejects[0].raw, "b,1,2");
        assert_eq!(l.rejects[0].raw, "b,1,2");
        assert_eq!(l.rejects[1].reason, "expected 4 fields as in the header, found 5");
    }

    #[test]
    fn uncastable_values_become_null_and_are_counted() {
        let l = read(b"id,amount,n,note\na,abc,2.5,x\nb,1,1,y\n");
        assert_eq!(l.total_cast_failures(), 2);
        assert_eq!(l.batches[0].column(1).null_count(), 1);
    }

    #[test]
    fn key_column_absent_from_header_rejects_every_row() {
        let l = read(b"amount,n\n1,2\n3,4\n");
        assert_eq!(l.rejects.len(), 2);
        assert!(l.rejects[0].reason.contains("missing from the header"));
    }

    #[test]
    fn record_hash_is_content_based() {
        let a = read(b"id,amount,n,note\na,1,2,x\n");
        let b = read(b"note,id,amount,n\r\nx,a,1,2\r\n");
        let h = |l: &Landed| {
            l.batches[0].column_by_name("record_hash").unwrap().as_primitive::<Int64Type>().value(0)
        };
        // The hash follows the declared columns, so line ends and column order do not matter...
        assert_eq!(h(&a), h(&b));
        // ...but content does.
        assert_ne!(h(&a), h(&read(b"id,amount,n,note\na,1,2,y\n")));
    }
}
