//! Event-time watermark and the dedup state of recent event ids (SPEC section 8).
//!
//! The watermark is the largest plausible event time seen so far minus the allowed lateness; a
//! batch uses the watermark reached before it. An event older than the watermark is *late*: it
//! is still landed in bronze and silver and corrects the gold keys it belongs to, and it is
//! counted. Dedup by `event_id` is exact whatever the lateness:
//!
//! - the state holds the id of every bronze event whose time is at or after the watermark, so a
//!   recent event is checked in memory;
//! - it also holds a 64-bit hash of every id in bronze by event date (about 10 to 17 bytes an
//!   event, 70 MB for 4.3 M events): a late event (or any event before the stream has a
//!   watermark) whose hash is not there is new; one whose hash is there (a duplicate, or in about
//!   one case in 10^13 another id with the same hash) is checked against bronze, reading only the
//!   date partitions of the events being checked. A backfill of unordered events is nearly all
//!   late: it never reads bronze back unless it holds duplicates.
//! - the hashes are kept within the stream's memory budget: past it, the oldest dates are let go
//!   ([`EventState::let_go_before`]). A date let go keeps a Bloom filter of its hashes (about 1.2
//!   to 2.4 bytes an event instead of 10 to 17; one false positive in a hundred, never a false
//!   negative): an event of that date the filter lacks is new; one it may hold is checked against
//!   bronze like a duplicate. The filters have their own share of the budget
//!   ([`split_budget`]); past it the oldest are dropped, and an event of their dates is checked
//!   against bronze. A stream that runs for hours holds the recent dates, not every id, and very
//!   late events rarely read bronze.
//!
//! The state is not written anywhere: on start it is rebuilt from bronze (the rows at or after
//! the watermark recorded with the last committed batch), so it is always the state that
//! committed with bronze.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Date32Type, TimestampMicrosecondType};
use datafusion::parquet::bloom_filter::Sbbf;
use datafusion::prelude::SessionContext;
use foldhash::{HashMap, HashMapExt, HashSet};

use crate::Result;
use crate::lake::{Lake, Layer};
use crate::silver::usage_daily::floor_within;

/// Event time column of bronze usage events.
pub const EVENT_TS: &str = "timestamp";
/// Event id column.
pub const EVENT_ID: &str = "event_id";
/// Event date column (bronze's partition).
pub const EVENT_DATE: &str = "event_date";

/// Watermark and recent ids.
#[derive(Debug, Clone)]
pub struct EventState {
    lateness_micros: i64,
    max_event_micros: Option<i64>,
    recent: HashMap<String, i64>,
    /// [`id_hash`] of the event ids in bronze, of the dates held.
    seen: SeenIds,
}

/// The [`id_hash`] of bronze's event ids by event date (days since 1970), from a first date on.
#[derive(Debug, Clone, Default)]
struct SeenIds {
    dated: BTreeMap<i32, HashSet<u64>>,
    /// Events without a date (quarantined downstream: few).
    undated: HashSet<u64>,
    /// Dates before this one are not held: only bronze knows their ids.
    floor: Option<i32>,
    /// Bloom filters of the hashes of dates let go (those still within the filters' budget).
    gone: BTreeMap<i32, Sbbf>,
}

/// False positives of a date's filter when it is built.
const FILTER_FPP: f64 = 0.01;

/// The stream's state budget split in two: the id hashes and daily series held (seven eighths),
/// and the Bloom filters of the dates let go (an eighth).
pub fn split_budget(budget: usize) -> (usize, usize) {
    (budget - budget / 8, budget / 8)
}

impl SeenIds {
    fn holds(&self, date: Option<i32>) -> bool {
        match (date, self.floor) {
            (Some(d), Some(f)) => d >= f,
            _ => true,
        }
    }

    /// Whether an id's hash is known (`None` when only bronze can tell: its date is not held,
    /// and no filter of the date rules the hash out).
    fn contains(&self, date: Option<i32>, hash: u64) -> Option<bool> {
        if !self.holds(date) {
            return match date.and_then(|d| self.gone.get(&d)) {
                Some(filter) if !filter.check(&hash) => Some(false),
                _ => None,
            };
        }
        Some(match date {
            Some(d) => self.dated.get(&d).is_some_and(|s| s.contains(&hash)),
            None => self.undated.contains(&hash),
        })
    }

    /// Adds the hashes of ids of one date.
    fn insert_all(&mut self, date: Option<i32>, hashes: &[u64]) {
        match date {
            Some(d) if self.holds(date) => {
                self.dated.entry(d).or_default().extend(hashes.iter().copied());
            }
            Some(d) => {
                if let Some(filter) = self.gone.get_mut(&d) {
                    hashes.iter().for_each(|h| filter.insert(h));
                }
            }
            None => self.undated.extend(hashes.iter().copied()),
        }
    }

    /// Bytes held per date: a hash set spends about 9 bytes a slot (the hash and a control
    /// byte) and keeps at least an eighth of its slots free.
    fn bytes_by_date(&self) -> impl Iterator<Item = (i32, usize)> + '_ {
        self.dated.iter().map(|(d, s)| (*d, set_bytes(s)))
    }

    fn bytes(&self) -> usize {
        self.bytes_by_date().map(|(_, b)| b).sum::<usize>() + set_bytes(&self.undated)
    }

    /// Lets go of the dates before `date`, each keeping a Bloom filter of its hashes; then the
    /// oldest filters go until they fit in `filter_budget` bytes.
    fn let_go_before(&mut self, date: i32, filter_budget: usize) {
        if self.floor.is_some_and(|f| f >= date) {
            return;
        }
        let kept = self.dated.split_off(&date);
        for (d, hashes) in std::mem::replace(&mut self.dated, kept) {
            let mut filter = Sbbf::new_with_ndv_fpp(hashes.len().max(1) as u64, FILTER_FPP)
                .unwrap_or_else(|_| Sbbf::new_with_num_of_bytes(hashes.len() * 2));
            for h in &hashes {
                filter.insert(h);
            }
            self.gone.insert(d, filter);
        }
        self.floor = Some(date);
        while self.filter_bytes() > filter_budget && self.gone.pop_first().is_some() {}
    }

    fn filter_bytes(&self) -> usize {
        self.gone.values().map(|f| f.num_blocks() * 32).sum()
    }
}

fn set_bytes(s: &HashSet<u64>) -> usize {
    s.capacity() * 9 * 8 / 7
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
            seen: SeenIds::default(),
        }
    }

    /// The state after the committed batches: `max_event_micros` from the last plan, the hashes
    /// of bronze's ids (the newest dates that fit in `budget` bytes) and its recent ids
    /// (`bronze_usage_events` registered in `ctx`).
    pub async fn restore(
        ctx: &SessionContext,
        lake: &Lake,
        lateness: std::time::Duration,
        max_event_micros: Option<i64>,
        budget: usize,
    ) -> Result<Self> {
        let mut state = EventState::new(lateness);
        state.max_event_micros = max_event_micros;
        if !lake.register(ctx, Layer::Bronze, "usage_events").await? {
            return Ok(state);
        }
        let sql = format!("SELECT {EVENT_ID}, {EVENT_DATE} FROM bronze_usage_events");
        let mut ids = ctx.sql(&sql).await?.execute_stream().await?;
        let (held, filters) = split_budget(budget);
        while let Some(b) = futures::StreamExt::next(&mut ids).await {
            state.add_ids(&b?)?;
            if state.seen.bytes() > held {
                let floor = floor_within(state.bytes_by_date(), held);
                state.let_go_before(floor, filters);
            }
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

    /// Bytes of id hashes held per event date (the recent ids are few: those of the allowed
    /// lateness).
    pub fn bytes_by_date(&self) -> BTreeMap<i32, usize> {
        self.seen.bytes_by_date().collect()
    }

    /// Lets go of the hashes of dates before `date` (days since 1970), keeping a Bloom filter of
    /// each date's within `filter_budget` bytes (the oldest dropped first): an event of such a
    /// date that its filter may hold, or of a date without one, is checked against bronze.
    pub fn let_go_before(&mut self, date: i32, filter_budget: usize) {
        self.seen.let_go_before(date, filter_budget);
    }

    /// Bytes of the Bloom filters of the dates let go.
    pub fn filter_bytes(&self) -> usize {
        self.seen.filter_bytes()
    }

    /// The first date whose id hashes are held, once some were let go.
    pub fn floor(&self) -> Option<i32> {
        self.seen.floor
    }

    /// Adds the hashes of a batch's ids (columns `event_id` and `event_date`).
    fn add_ids(&mut self, b: &RecordBatch) -> Result<()> {
        let (Some(ids), Some(dates)) = (b.column_by_name(EVENT_ID), b.column_by_name(EVENT_DATE)) else {
            return Ok(());
        };
        let ids = datafusion::arrow::compute::cast(ids, &datafusion::arrow::datatypes::DataType::Utf8)?;
        let dates = dates.as_primitive::<Date32Type>();
        // Gathered by date first, then inserted a date at a time: a date's set then stays in
        // the cache, where a batch of unordered events would touch every date's set in turn.
        let mut by_date: HashMap<Option<i32>, Vec<u64>> = HashMap::new();
        for (id, d) in ids.as_string::<i32>().iter().zip(dates.iter()) {
            if let Some(id) = id {
                by_date.entry(d).or_default().push(id_hash(id));
            }
        }
        for (d, hashes) in by_date {
            self.seen.insert_all(d, &hashes);
        }
        Ok(())
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// Where an event of `date` must be checked: `Some(true)` seen (duplicate), `Some(false)`
    /// new, `None` when only bronze can tell (late, no watermark yet, or no time, and its hash is
    /// known or its date no longer held).
    pub fn check(&self, id: &str, ts: Option<i64>, date: Option<i32>) -> Option<bool> {
        match (self.watermark(), ts) {
            (Some(wm), Some(t)) if t >= wm => Some(self.recent.contains_key(id)),
            _ if self.seen.contains(date, id_hash(id)) == Some(false) => Some(false),
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
            self.add_ids(b)?;
            let (Some(ids), Some(ts)) = (b.column_by_name(EVENT_ID), b.column_by_name(EVENT_TS)) else {
                continue;
            };
            let ids = datafusion::arrow::compute::cast(ids, &datafusion::arrow::datatypes::DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
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
    use datafusion::arrow::array::{Date32Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    const HOUR: i64 = 3_600_000_000;

    /// Bronze rows of (id, time); the date is the time's.
    fn rows(events: &[(&str, i64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new(EVENT_ID, DataType::Utf8, true),
            Field::new(EVENT_TS, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new(EVENT_DATE, DataType::Date32, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.0))),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(Date32Array::from_iter_values(events.iter().map(|e| (e.1 / (24 * HOUR)) as i32))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn recent_ids_are_checked_in_memory_and_late_ones_go_to_bronze() {
        let mut s = EventState::new(std::time::Duration::from_secs(3600));
        assert_eq!(
            s.check("a", Some(0), Some(0)),
            Some(false),
            "no watermark yet, and an id never seen: new"
        );
        s.absorb(&[rows(&[("a", 10 * HOUR), ("b", 8 * HOUR), ("c", 9 * HOUR + 1)])], 100 * HOUR).unwrap();
        assert_eq!(s.watermark(), Some(9 * HOUR));
        assert_eq!(s.check("a", Some(10 * HOUR), Some(0)), Some(true));
        assert_eq!(s.check("c", Some(9 * HOUR + 1), Some(0)), Some(true));
        assert_eq!(s.check("z", Some(9 * HOUR), Some(0)), Some(false), "on time and unseen: new");
        assert_eq!(s.check("b", Some(8 * HOUR), Some(0)), None, "late and its hash is known: bronze decides");
        assert_eq!(s.check("y", Some(8 * HOUR), Some(0)), Some(false), "late, but no id has its hash: new");
        assert_eq!(s.check("a", None, Some(0)), None);
        assert_eq!(s.check("x", None, Some(0)), Some(false));
        assert_eq!(s.len(), 2, "b is below the watermark and not kept");
        // A far-future time (silver rejects it) does not move the watermark.
        assert_eq!(s.max_event_micros_after(&[rows(&[("f", 1000 * HOUR)])], 100 * HOUR), Some(10 * HOUR));
        assert_eq!(s.max_event_micros_after(&[rows(&[("g", 12 * HOUR)])], 100 * HOUR), Some(12 * HOUR));
        assert_eq!(EventState::new(std::time::Duration::ZERO).max_event_micros_after(&[], 0), None);
        s.absorb(&[rows(&[("f", 1000 * HOUR)])], 100 * HOUR).unwrap();
        assert_eq!(s.watermark(), Some(9 * HOUR));
        s.absorb(&[rows(&[("d", 20 * HOUR)])], 100 * HOUR).unwrap();
        assert_eq!(s.watermark(), Some(19 * HOUR));
        assert_eq!(s.len(), 2, "the watermark moved past a and c: d and the far-future f remain");
    }

    #[test]
    fn past_the_budget_the_oldest_dates_are_let_go_and_their_events_go_to_bronze() {
        let day = 24 * HOUR;
        let mut s = EventState::new(std::time::Duration::from_secs(3600));
        let ids: Vec<(String, i64)> =
            (0..3000).map(|i| (format!("e{i}"), (i % 3) as i64 * day + (i as i64 % 7) * HOUR)).collect();
        let refs: Vec<(&str, i64)> = ids.iter().map(|(i, t)| (i.as_str(), *t)).collect();
        s.absorb(&[rows(&refs)], 100 * day).unwrap();
        let bytes = s.bytes_by_date();
        assert_eq!(bytes.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        // Days 0, 1, 2 hold about the same: a budget of two keeps days 1 and 2.
        let two = bytes[&1] + bytes[&2];
        assert_eq!(floor_within(bytes.clone(), two), 1);
        assert_eq!(floor_within(bytes.clone(), usize::MAX), 0);
        assert_eq!(floor_within(bytes.clone(), 0), 2, "the newest date is always kept");
        assert_eq!(floor_within(Vec::new(), 0), i32::MIN);
        // Late (before the watermark, 2 days + 5 h) and day 0 let go: bronze decides.
        assert_eq!(s.check("e0", Some(0), Some(0)), None);
        assert_eq!(s.check("new", Some(0), Some(0)), Some(false));
        // Without room for filters, day 0 is bronze's alone.
        let mut bare = s.clone();
        bare.let_go_before(1, 0);
        assert_eq!((bare.floor(), bare.filter_bytes()), (Some(1), 0));
        assert_eq!(bare.check("new", Some(0), Some(0)), None, "day 0 is no longer held");
        assert_eq!(bare.check("e0", Some(0), Some(0)), None);
        // With room, day 0 keeps a filter: every id of day 0 goes to bronze, and nearly every
        // id it never saw is known new without reading bronze.
        s.let_go_before(1, usize::MAX);
        assert_eq!(s.floor(), Some(1));
        assert!(
            s.filter_bytes() > 0 && s.filter_bytes() < bytes[&0] / 4,
            "{} vs {}",
            s.filter_bytes(),
            bytes[&0]
        );
        let day0 = ids.iter().filter(|(_, t)| *t < day).map(|(i, _)| i.as_str());
        assert!(day0.clone().all(|i| s.check(i, Some(0), Some(0)).is_none()));
        let fresh = (0..1000).filter(|i| s.check(&format!("n{i}"), Some(0), Some(0)) == Some(false)).count();
        assert!(fresh >= 950, "{fresh} of 1000 fresh ids known new");
        // An event of day 0 taken in after its date was let go goes into the filter.
        let late =
            (0..1000).map(|i| format!("n{i}")).find(|i| s.check(i, Some(0), Some(0)) == Some(false)).unwrap();
        s.absorb(&[rows(&[(late.as_str(), 2 * HOUR)])], 100 * day).unwrap();
        assert_eq!(s.check(&late, Some(2 * HOUR), Some(0)), None);
        assert_eq!(s.check("new", Some(day), Some(1)), Some(false));
        assert_eq!(s.check("e1", Some(day), Some(1)), None, "e1 is of day 1, held, and seen");
        assert_eq!(s.check("undated", None, None), Some(false));
        assert!(s.bytes_by_date().keys().all(|d| *d >= 1));
        // A later batch of day 0 adds nothing to the state; a lower floor changes nothing.
        s.absorb(&[rows(&[("z", 3 * HOUR)])], 100 * day).unwrap();
        s.let_go_before(0, usize::MAX);
        assert_eq!((s.floor(), s.bytes_by_date().contains_key(&0)), (Some(1), false));
        // Filters past their budget go, oldest first.
        s.let_go_before(2, s.filter_bytes());
        assert_eq!(s.check("new", Some(0), Some(0)), None, "day 0's filter made room for day 1's");
        assert_eq!(s.check("new", Some(day), Some(1)), Some(false));
    }
}
