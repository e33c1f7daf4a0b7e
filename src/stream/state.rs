//! Event-time watermark and the dedup state of recent event ids (SPEC section 8).
//!
//! The watermark is the largest plausible event time seen so far minus the allowed lateness; a
//! batch uses the watermark reached before it. An event older than the watermark is *late*: it
//! is still landed in bronze and silver and corrects the gold keys it belongs to, and it is
//! counted. Dedup by `event_id` is exact whatever the lateness:
//!
//! - the state holds the id of every bronze event whose time is at or after the watermark, so a
//!   recent event is checked in memory;
//! - it also holds a 64-bit hash of every id in bronze (8 bytes an event, about 70 MB for 4.3 M
//!   events): a late event (or any event before the stream has a watermark) whose hash is not
//!   there is new; one whose hash is there (a duplicate, or in about one case in 10^13 another id
//!   with the same hash) is checked against bronze, reading only the date partitions of the
//!   events being checked. A backfill of unordered events is nearly all late: it never reads
//!   bronze back unless it holds duplicates.
//!
//! The state is not written anywhere: on start it is rebuilt from bronze (the rows at or after
//! the watermark recorded with the last committed batch), so it is always the state that
//! committed with bronze.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::prelude::SessionContext;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::Result;
use crate::lake::{Lake, Layer};

/// Event time column of bronze usage events.
pub const EVENT_TS: &str = "timestamp";
/// Event id column.
pub const EVENT_ID: &str = "event_id";

/// Watermark and recent ids.
#[derive(Debug, Clone)]
pub struct EventState {
    lateness_micros: i64,
    max_event_micros: Option<i64>,
    recent: HashMap<String, i64>,
    /// [`id_hash`] of every event id in bronze.
    seen: HashSet<u64>,
}

/// The hash [`EventState`] keeps of an event id (XXH3, the same in every process).
pub fn id_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

impl EventState {
    /// A state with nothing seen.
    pub fn new(lateness: std::time::Duration) -> Self {
        EventState {
            lateness_micros: i64::try_from(lateness.as_micros()).unwrap_or(i64::MAX),
            max_event_micros: None,
            recent: HashMap::new(),
            seen: HashSet::new(),
        }
    }

    /// The state after the committed batches: `max_event_micros` from the last plan, the hashes
    /// of bronze's ids and its recent ids (`bronze_usage_events` registered in `ctx`).
    pub async fn restore(
        ctx: &SessionContext,
        lake: &Lake,
        lateness: std::time::Duration,
        max_event_micros: Option<i64>,
    ) -> Result<Self> {
        let mut state = EventState::new(lateness);
        state.max_event_micros = max_event_micros;
        if !lake.register(ctx, Layer::Bronze, "usage_events").await? {
            return Ok(state);
        }
        let mut ids =
            ctx.sql(&format!("SELECT {EVENT_ID} FROM bronze_usage_events")).await?.execute_stream().await?;
        while let Some(b) = futures::StreamExt::next(&mut ids).await {
            let b = b?;
            let ids =
                datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8)?;
            state.seen.extend(ids.as_string::<i32>().iter().flatten().map(id_hash));
        }
        let Some(wm) = state.watermark() else { return Ok(state) };
        let date = micros_date(wm);
        let sql = format!(
            "SELECT {EVENT_ID}, CAST({EVENT_TS} AS BIGINT) AS ts FROM bronze_usage_events
             WHERE event_date >= DATE '{date}' AND {EVENT_TS} >= arrow_cast({wm}, 'Timestamp(µs, \"UTC\")')"
        );
        for b in ctx.sql(&sql).await?.collect().await? {
            let ids =
                datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            let ts = b.column(1).as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                if ids.is_valid(i) && ts.is_valid(i) {
                    state.recent.insert(ids.value(i).to_string(), ts.value(i));
                }
            }
        }
        Ok(state)
    }

    /// The largest plausible event time once `rows` are taken in (what [`EventState::absorb`]
    /// would make it), without touching the state: what a batch's plan records.
    pub fn max_event_micros_after(&self, rows: &[RecordBatch], now_micros: i64) -> Option<i64> {
        let horizon = now_micros.saturating_add(86_400_000_000);
        let times = rows.iter().filter_map(|b| b.column_by_name(EVENT_TS));
        let newest = times
            .flat_map(|ts| ts.as_primitive::<TimestampMicrosecondType>().iter().flatten())
            .filter(|t| *t <= horizon)
            .max();
        match (self.max_event_micros, newest) {
            (Some(m), Some(t)) => Some(m.max(t)),
            (m, t) => m.or(t),
        }
    }

    /// The current watermark (event time, microseconds), once an event was seen.
    pub fn watermark(&self) -> Option<i64> {
        self.max_event_micros.map(|m| m.saturating_sub(self.lateness_micros))
    }

    /// The largest plausible event time seen.
    pub fn max_event_micros(&self) -> Option<i64> {
        self.max_event_micros
    }

    /// Ids held in memory.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// Where an event must be checked: `Some(true)` seen (duplicate), `Some(false)` new, `None`
    /// when only bronze can tell (late, no watermark yet, or no time, and its hash is known).
    pub fn check(&self, id: &str, ts: Option<i64>) -> Option<bool> {
        match (self.watermark(), ts) {
            (Some(wm), Some(t)) if t >= wm => Some(self.recent.contains_key(id)),
            _ if !self.seen.contains(&id_hash(id)) => Some(false),
            _ => None,
        }
    }

    /// Takes in a committed batch's new rows: advances the watermark (ignoring times after
    /// `now_micros` + 1 day, which silver rejects as implausible), remembers the ids at or after
    /// it and forgets the older ones.
    pub fn absorb(&mut self, rows: &[RecordBatch], now_micros: i64) -> Result<()> {
        self.max_event_micros = self.max_event_micros_after(rows, now_micros);
        let wm = self.watermark();
        if let Some(wm) = wm {
            self.recent.retain(|_, t| *t >= wm);
        }
        for b in rows {
            let (Some(ids), Some(ts)) = (b.column_by_name(EVENT_ID), b.column_by_name(EVENT_TS)) else {
                continue;
            };
            let ids = datafusion::arrow::compute::cast(ids, &datafusion::arrow::datatypes::DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            self.seen.extend(ids.iter().flatten().map(id_hash));
            let Some(wm) = wm else { continue };
            let ts = ts.as_primitive::<TimestampMicrosecondType>();
            for (id, t) in ids.iter().zip(ts.iter()) {
                if let (Some(id), Some(t)) = (id, t)
                    && t >= wm
                {
                    self.recent.insert(id.to_string(), t);
                }
            }
        }
        Ok(())
    }
}

/// The UTC date of an instant in microseconds, as `YYYY-MM-DD`.
pub fn micros_date(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_else(|| "1970-01-01".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn rows(events: &[(&str, i64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new(EVENT_ID, DataType::Utf8, true),
            Field::new(EVENT_TS, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.1))
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    #[test]
    fn recent_ids_are_checked_in_memory_and_late_ones_go_to_bronze() {
        let hour = 3_600_000_000i64;
        let mut s = EventState::new(std::time::Duration::from_secs(3600));
        assert_eq!(s.check("a", Some(0)), Some(false), "no watermark yet, and an id never seen: new");
        s.absorb(&[rows(&[("a", 10 * hour), ("b", 8 * hour), ("c", 9 * hour + 1)])], 100 * hour).unwrap();
        assert_eq!(s.watermark(), Some(9 * hour));
        assert_eq!(s.check("a", Some(10 * hour)), Some(true));
        assert_eq!(s.check("c", Some(9 * hour + 1)), Some(true));
        assert_eq!(s.check("z", Some(9 * hour)), Some(false), "on time and unseen: new");
        assert_eq!(s.check("b", Some(8 * hour)), None, "late and its hash is known: bronze decides");
        assert_eq!(s.check("y", Some(8 * hour)), Some(false), "late, but no id has its hash: new");
        assert_eq!(s.check("a", None), None);
        assert_eq!(s.check("x", None), Some(false));
        assert_eq!(s.len(), 2, "b is below the watermark and not kept");
        // A far-future time (silver rejects it) does not move the watermark.
        assert_eq!(s.max_event_micros_after(&[rows(&[("f", 1000 * hour)])], 100 * hour), Some(10 * hour));
        assert_eq!(s.max_event_micros_after(&[rows(&[("g", 12 * hour)])], 100 * hour), Some(12 * hour));
        assert_eq!(EventState::new(std::time::Duration::ZERO).max_event_micros_after(&[], 0), None);
        s.absorb(&[rows(&[("f", 1000 * hour)])], 100 * hour).unwrap();
        assert_eq!(s.watermark(), Some(9 * hour));
        s.absorb(&[rows(&[("d", 20 * hour)])], 100 * hour).unwrap();
        assert_eq!(s.watermark(), Some(19 * hour));
        assert_eq!(s.len(), 2, "the watermark moved past a and c: d and the far-future f remain");
    }
}
