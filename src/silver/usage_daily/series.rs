//! `silver_usage_daily` held in memory by a stream between micro-batches: per (org, service)
//! series, each day's exact feature sums and its scores.
//!
//! A micro-batch adds its own daily sums (those of [`super::features_sql`] over its new silver
//! events, summed in one pass) to the days they belong to, then rescores each touched series
//! from its first touched day to `window_days` after its last (the days whose features or
//! trailing baseline include a touched day), over a range starting `window_days` earlier so
//! every baseline is complete: the same rows, sums and scores as a full rebuild (tested). The
//! stream loads the series from the lake once and keeps them while its commits succeed. While a
//! backlog is read, the changes of several batches wait for one gold step
//! ([`Changed::union`] of their spans), and so does their scoring ([`DailySeries::score`]):
//! a span rescored once after several batches gets the scores it would after each (a day whose
//! trailing window holds a changed day is itself in that day's span).
//!
//! Memory follows the daily table (one entry per (org, date, service)), not the events; a stream
//! that runs for long lets go of its oldest days once they are written
//! ([`DailySeries::let_go_before`]) and reads a series' old days back from the lake when a late
//! event needs them ([`DailySeries::load_missing`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Int64Type, Schema, SchemaRef,
};
use datafusion::prelude::SessionContext;
use foldhash::{HashMap, HashMapExt};

use super::score_columns;
use crate::bronze::MONEY_SCALE;
use crate::lake::{Lake, Layer};
use crate::silver::anomalies::{AnomalyConfig, Score, score_series};
use crate::{Error, Result};

/// An (org_id, service) series.
type Key = (Option<String>, Option<String>);
/// A series' days by date.
type Days = BTreeMap<Option<i32>, Day>;
/// A row of a micro-batch's features: (batch, row).
type Position = (usize, usize);

/// The exact decimal features, in table order: `cost_usd` (null when every event's cost was
/// null; the others count a null as 0, as the feature query's `COALESCE` does).
const DECIMALS: [&str; 5] = ["cost_usd", "requests", "cpu_hours", "storage_gb_hours", "carbon_kg"];
const DECIMAL: DataType = DataType::Decimal128(18, MONEY_SCALE);
/// Largest magnitude a `DECIMAL(18, 6)` feature holds, in its unscaled units.
const DECIMAL_LIMIT: i128 = 1_000_000_000_000_000_000;

/// One (org, date, service) row. A stream holds one per row of the daily table, so it is kept
/// small: the decimals in 64 bits (a `DECIMAL(18, 6)` fits) and cost's null as a flag.
#[derive(Debug, Clone, Default, PartialEq)]
struct Day {
    /// The [`DECIMALS`] in unscaled units; the null cost is 0 here (see `has_cost`).
    decimals: [i64; 5],
    /// Whether some event had a cost: `cost_usd` is null otherwise (the other decimals count a
    /// null as 0).
    has_cost: bool,
    genai_tokens: i64,
    events: i64,
    score: Score,
}

impl Day {
    /// A day of sums, `None` for a null (a null cost stays null; the others count it as 0).
    /// The sums are `DECIMAL(18, 6)` values, so they fit; one that does not fails here.
    fn of(decimals: [Option<i128>; 5], genai_tokens: i64, events: i64) -> Result<Day> {
        let mut out = [0i64; 5];
        for (i, (o, v)) in out.iter_mut().zip(decimals).enumerate() {
            let v = v.unwrap_or(0);
            *o = i64::try_from(v).ok().filter(|v| i128::from(*v).abs() < DECIMAL_LIMIT).ok_or_else(|| {
                Error::Internal(format!(
                    "a daily {} value {v} overflows DECIMAL(18, {MONEY_SCALE})",
                    DECIMALS[i]
                ))
            })?;
        }
        Ok(Day {
            decimals: out,
            has_cost: decimals[0].is_some(),
            genai_tokens,
            events,
            score: Score::default(),
        })
    }

    /// Decimal `i` as the table holds it (null only for a cost no event had).
    fn decimal(&self, i: usize) -> Option<i128> {
        (i != 0 || self.has_cost).then(|| i128::from(self.decimals[i]))
    }

    fn add(&mut self, other: &Day) -> Result<()> {
        for (i, (a, b)) in self.decimals.iter_mut().zip(other.decimals).enumerate() {
            let sum = i128::from(*a) + i128::from(b);
            if sum.abs() >= DECIMAL_LIMIT {
                return Err(Error::Internal(format!(
                    "a daily {} sum overflows DECIMAL(18, {MONEY_SCALE})",
                    DECIMALS[i]
                )));
            }
            *a = sum as i64;
        }
        self.has_cost |= other.has_cost;
        self.genai_tokens += other.genai_tokens;
        self.events += other.events;
        Ok(())
    }

    fn cost(&self) -> f64 {
        self.decimals[0] as f64 / 10f64.powi(MONEY_SCALE as i32)
    }
}

/// What [`DailySeries::apply`] changed: per touched series, the days from its first touched day
/// to `window_days` after its last.
#[derive(Debug, Default, Clone)]
pub struct Changed {
    spans: BTreeMap<Key, (i32, i32)>,
}

impl Changed {
    /// Whether no row changed.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The rows changed by `self` or by `other` (batches whose gold step was deferred to one
    /// commit): per series, one span from the first day either names to the last.
    pub fn union(mut self, other: Changed) -> Changed {
        self.merge(&other);
        self
    }

    /// Adds `other`'s spans: per series, one span from the first day either names to the last.
    fn merge(&mut self, other: &Changed) {
        for (key, &(lo, to)) in &other.spans {
            match self.spans.get_mut(key) {
                Some(s) => *s = (s.0.min(lo), s.1.max(to)),
                None => {
                    self.spans.insert(key.clone(), (lo, to));
                }
            }
        }
    }
}

/// The days of every series, with the schema the rows are written in.
#[derive(Debug, Default)]
pub struct DailySeries {
    series: BTreeMap<Key, Days>,
    /// The feature columns as the feature query types them (set by the first batch applied).
    features: Option<SchemaRef>,
    /// The spans applied since the last [`DailySeries::score`]: their scores are stale.
    unscored: Changed,
    /// Days before this one are in the lake only (let go to bound memory)...
    floor: Option<i32>,
    /// ...except for these series, held from the given day (read back for late events).
    below: HashMap<Key, i32>,
    /// Rows held per date (their sum is the rows held).
    per_date: BTreeMap<Option<i32>, usize>,
}

/// About what a held row costs: the day, its date key and the B-tree's share around them.
const ROW_BYTES: usize = std::mem::size_of::<(Option<i32>, Day)>() * 3 / 2;

impl DailySeries {
    /// The rows of `silver_usage_daily` in the lake (none when it does not exist yet), with its
    /// feature columns as stored, so they can be written back before any batch is applied. Past
    /// `budget` bytes, the oldest days are let go as the rows stream in.
    pub async fn load(ctx: &SessionContext, lake: &Lake, budget: usize) -> Result<Self> {
        const T: &str = "__usage_daily_series_load";
        let mut out = DailySeries::default();
        if !lake.register_as(ctx, Layer::Silver, "usage_daily", T).await? {
            return Ok(out);
        }
        let read = out.read_all(ctx, T, budget).await;
        let _ = ctx.deregister_table(T)?;
        read?;
        Ok(out)
    }

    async fn read_all(&mut self, ctx: &SessionContext, table: &str, budget: usize) -> Result<()> {
        let df = ctx.sql(&format!("SELECT * FROM {table}")).await?;
        let scores: HashSet<String> =
            score_columns(&[])?.into_iter().map(|(f, _)| f.name().clone()).collect();
        let stored = df.schema().as_arrow().fields().clone();
        let features: Vec<_> = stored.iter().filter(|f| !scores.contains(f.name())).cloned().collect();
        self.features = Some(Arc::new(Schema::new(features)));
        let mut rows = df.execute_stream().await?;
        while let Some(b) = futures::StreamExt::next(&mut rows).await {
            let b = b?;
            let columns = Columns::of(&b)?;
            let scores = ScoreColumns::of(&b)?;
            for i in 0..b.num_rows() {
                let k = &columns.keys;
                if let (Some(f), Some(d)) = (self.floor, k.date(i))
                    && d < f
                {
                    continue;
                }
                let key = (k.org(i).map(str::to_string), k.service(i).map(str::to_string));
                self.insert_stored(key, k.date(i), &columns, &scores, i)?;
            }
            if self.len() * ROW_BYTES > budget {
                let floor = floor_within(self.bytes_by_date(), budget);
                self.let_go_before(floor)?;
            }
        }
        Ok(())
    }

    /// The schema of the feature query's rows, once a batch was applied or the series loaded.
    pub fn features(&self) -> Option<SchemaRef> {
        self.features.clone()
    }

    /// Rows held (the daily table's size, once nothing was let go).
    pub fn len(&self) -> usize {
        self.per_date.values().sum()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.per_date.is_empty()
    }

    /// Inserts row `i` of rows read from the table (features and scores); true when the day was
    /// not held.
    fn insert_stored(
        &mut self,
        key: Key,
        date: Option<i32>,
        columns: &Columns,
        scores: &ScoreColumns,
        i: usize,
    ) -> Result<bool> {
        let mut day = columns.sums(i)?;
        day.score = scores.row(i);
        let new = self.series.entry(key).or_default().insert(date, day).is_none();
        if new {
            *self.per_date.entry(date).or_default() += 1;
        }
        Ok(new)
    }

    /// Adds a micro-batch's daily sums (rows of [`super::features_sql`]) to the touched series,
    /// whose scores wait for [`DailySeries::score`]; returns which rows changed. A row without
    /// an org or a date touches no series.
    pub fn apply(&mut self, delta: &[RecordBatch], cfg: &AnomalyConfig) -> Result<Changed> {
        let Some(first) = delta.first() else { return Ok(Changed::default()) };
        self.features = Some(first.schema());
        let columns = delta.iter().map(Columns::of).collect::<Result<Vec<_>>>()?;
        self.absorb(&columns, cfg)
    }

    /// [`DailySeries::apply`] of a micro-batch's new silver events `clean`, summed here (one
    /// pass, no query): the sums [`super::features_sql`] gives, to the unit (each float is cast
    /// to `DECIMAL(18, 6)` by the same Arrow kernel as the query's `CAST`; tested against it).
    /// `features` is the schema of that query's rows.
    pub fn apply_events(
        &mut self,
        clean: &[RecordBatch],
        features: SchemaRef,
        cfg: &AnomalyConfig,
    ) -> Result<Changed> {
        self.features = Some(features);
        let columns = EventColumns::of_all(clean)?;
        self.absorb(&columns, cfg)
    }

    /// Bytes held per date (about: [`ROW_BYTES`] a row).
    pub fn bytes_by_date(&self) -> impl Iterator<Item = (i32, usize)> + '_ {
        self.per_date.iter().filter_map(|(d, n)| d.map(|d| (d, n * ROW_BYTES)))
    }

    /// The first date held in memory for every series, once older ones were let go.
    pub fn floor(&self) -> Option<i32> {
        self.floor
    }

    /// Lets go of the days before `date` (days since 1970), which must all be written to the
    /// lake: a later batch that needs them reads them back ([`DailySeries::load_missing`]).
    pub fn let_go_before(&mut self, date: i32) -> Result<()> {
        if !self.unscored.spans.is_empty() {
            return Err(Error::Internal("daily days let go before their changes were scored".into()));
        }
        let floor = self.floor.map_or(date, |f| f.max(date));
        for days in self.series.values_mut() {
            let undated = days.remove(&None);
            let kept = days.split_off(&Some(floor));
            *days = kept;
            if let Some(u) = undated {
                days.insert(None, u);
            }
        }
        self.series.retain(|_, days| !days.is_empty());
        let kept = self.per_date.split_off(&Some(floor));
        let undated = self.per_date.remove(&None);
        self.per_date = kept;
        if let Some(u) = undated {
            self.per_date.insert(None, u);
        }
        self.floor = Some(floor);
        self.below.clear();
        Ok(())
    }

    /// Reads back from the lake's daily table the days of the series that new silver events
    /// `clean` touch before the floor: from `window_days` before the earliest touched day, so
    /// its rescoring sees a whole baseline. Returns the rows read.
    pub async fn load_missing(
        &mut self,
        ctx: &SessionContext,
        lake: &Lake,
        clean: &[RecordBatch],
        cfg: &AnomalyConfig,
    ) -> Result<usize> {
        const T: &str = "__usage_daily_series_missing";
        let Some(floor) = self.floor else { return Ok(0) };
        // Per series, the first day a batch row needs held, when it is not.
        let mut need: HashMap<Key, (i32, i32)> = HashMap::new();
        for b in clean {
            let k = Keys::of(b)?;
            for i in 0..k.len() {
                let (Some(org), Some(d)) = (k.org(i), k.date(i)) else { continue };
                let from = d.saturating_sub(cfg.window_days);
                if from >= floor {
                    continue;
                }
                let key: Key = (Some(org.to_string()), k.service(i).map(str::to_string));
                let held = self.below.get(&key).copied().unwrap_or(floor);
                if from < held {
                    let e = need.entry(key).or_insert((from, held));
                    e.0 = e.0.min(from);
                }
            }
        }
        if need.is_empty() {
            return Ok(0);
        }
        let lo = need.values().map(|r| r.0).min().unwrap_or(floor);
        let hi = need.values().map(|r| r.1).max().unwrap_or(floor);
        let orgs: std::collections::BTreeSet<&str> = need.keys().filter_map(|k| k.0.as_deref()).collect();
        let list: Vec<String> = orgs.iter().map(|o| format!("'{}'", o.replace('\'', "''"))).collect();
        let sql = format!(
            "SELECT * FROM {T} WHERE usage_date >= DATE '{}' AND usage_date < DATE '{}' AND org_id IN ({})",
            crate::serving::from_days(lo),
            crate::serving::from_days(hi),
            list.join(", ")
        );
        if !lake.register_as(ctx, Layer::Silver, "usage_daily", T).await? {
            return Err(Error::Internal("daily days were let go but the daily table is gone".into()));
        }
        let rows = async { ctx.sql(&sql).await?.collect().await }.await;
        let _ = ctx.deregister_table(T)?;
        let mut read = 0;
        for b in rows? {
            let columns = Columns::of(&b)?;
            let scores = ScoreColumns::of(&b)?;
            for i in 0..b.num_rows() {
                let k = &columns.keys;
                let key = (k.org(i).map(str::to_string), k.service(i).map(str::to_string));
                let (Some(&(from, held)), Some(d)) = (need.get(&key), k.date(i)) else { continue };
                if (from..held).contains(&d) && self.insert_stored(key, Some(d), &columns, &scores, i)? {
                    read += 1;
                }
            }
        }
        for (key, (from, _)) in need {
            self.below.insert(key, from);
        }
        Ok(read)
    }

    /// Rows in the spans of `changed` (the daily rows its gold step writes).
    pub fn rows_in(&self, changed: &Changed) -> usize {
        let rows = changed.spans.iter().filter_map(|(key, &(lo, to))| {
            self.series.get(key).map(|days| days.range(Some(lo)..=Some(to)).count())
        });
        rows.sum()
    }

    fn absorb<R: DailyRows>(&mut self, columns: &[R], cfg: &AnomalyConfig) -> Result<Changed> {
        let mut changed = Changed::default();
        for ((org, service), rows) in by_series(columns) {
            let key: Key = (Some(org.to_string()), service.map(str::to_string));
            let days = self.series.entry(key.clone()).or_default();
            let (mut lo, mut hi) = (i32::MAX, i32::MIN);
            for (b, i) in rows {
                let c = &columns[b];
                let Some(d) = c.keys().date(i) else { continue };
                let day = days.entry(Some(d)).or_insert_with(|| {
                    *self.per_date.entry(Some(d)).or_default() += 1;
                    Day::default()
                });
                day.add(&c.sums(i)?)?;
                (lo, hi) = (lo.min(d), hi.max(d));
            }
            changed.spans.insert(key, (lo, hi.saturating_add(cfg.window_days)));
        }
        self.unscored.merge(&changed);
        Ok(changed)
    }

    /// Rescores the spans applied since the last call: before any row is read out.
    pub fn score(&mut self, cfg: &AnomalyConfig) {
        let unscored = std::mem::take(&mut self.unscored);
        // Series score independently: the touched ones are shared out over the cores.
        let mut work: Vec<(&mut Days, i32, i32)> = self
            .series
            .iter_mut()
            .filter_map(|(key, days)| unscored.spans.get(key).map(|&(lo, to)| (days, lo, to)))
            .collect();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let share = work.len().div_ceil(cores).max(1);
        std::thread::scope(|scope| {
            for part in work.chunks_mut(share) {
                scope.spawn(move || {
                    for (days, lo, to) in part.iter_mut() {
                        rescore(days, *lo, *to, cfg);
                    }
                });
            }
        });
    }

    /// An error when rows were applied and not scored since (their scores would be stale).
    fn scored(&self) -> Result<()> {
        match self.unscored.spans.is_empty() {
            true => Ok(()),
            false => Err(Error::Internal("daily series read out before their changes were scored".into())),
        }
    }

    /// The rows `changed` names, ordered by org, service and date.
    pub fn changed_batch(&self, changed: &Changed) -> Result<RecordBatch> {
        self.scored()?;
        let rows = changed.spans.iter().flat_map(|(key, &(lo, to))| {
            self.series
                .get(key)
                .into_iter()
                .flat_map(move |days| days.range(Some(lo)..=Some(to)))
                .map(move |(d, day)| (key, *d, day))
        });
        self.batch(rows)
    }

    /// Every row, ordered by org, service and date: the whole table, built on every core (a
    /// batch per core).
    pub fn to_batches(&self) -> Result<Vec<RecordBatch>> {
        self.scored()?;
        let keys: Vec<&Key> = self.series.keys().collect();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let share = keys.len().div_ceil(cores).max(1);
        crate::parallel::map(keys.chunks(share).collect(), |part| {
            self.batch(
                part.iter().flat_map(|key| self.series[*key].iter().map(move |(d, day)| (*key, *d, day))),
            )
        })
    }

    /// The schema rows are written in: the feature columns, then [`score_columns`].
    fn batch<'a>(&self, rows: impl Iterator<Item = (&'a Key, Option<i32>, &'a Day)>) -> Result<RecordBatch> {
        let features = self
            .features
            .clone()
            .ok_or_else(|| Error::Internal("daily series written before a batch was applied".into()))?;
        let (mut org, mut date, mut service) = (Vec::new(), Vec::new(), Vec::new());
        let mut decimals: [Vec<Option<i128>>; 5] = Default::default();
        let (mut tokens, mut events, mut scores) = (Vec::new(), Vec::new(), Vec::new());
        for (key, d, day) in rows {
            org.push(key.0.as_deref());
            service.push(key.1.as_deref());
            date.push(d);
            for (i, column) in decimals.iter_mut().enumerate() {
                column.push(day.decimal(i));
            }
            tokens.push(day.genai_tokens);
            events.push(day.events);
            scores.push(day.score.clone());
        }
        let mut built: Vec<(&str, ArrayRef)> = vec![
            ("org_id", Arc::new(StringArray::from(org))),
            ("usage_date", Arc::new(Date32Array::from(date))),
            ("service", Arc::new(StringArray::from(service))),
            ("genai_tokens", Arc::new(Int64Array::from(tokens))),
            ("events", Arc::new(Int64Array::from(events))),
        ];
        for (name, values) in DECIMALS.iter().zip(decimals) {
            let array = Decimal128Array::from(values).with_precision_and_scale(18, MONEY_SCALE)?;
            built.push((name, Arc::new(array)));
        }
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for f in features.fields() {
            let (_, array) = built.iter().find(|(n, _)| *n == f.name()).ok_or_else(|| {
                Error::Internal(format!("daily features have an unexpected column {}", f.name()))
            })?;
            fields.push(f.as_ref().clone());
            columns.push(cast(array, f.data_type())?);
        }
        for (f, a) in score_columns(&scores)? {
            fields.push(f);
            columns.push(a);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
    }
}

/// The first date to hold so that the bytes of the dates from it on stay within `budget`: the
/// newest dates are kept, and always the newest one.
pub fn floor_within(bytes_by_date: impl IntoIterator<Item = (i32, usize)>, budget: usize) -> i32 {
    let by_date: BTreeMap<i32, usize> = bytes_by_date.into_iter().fold(BTreeMap::new(), |mut m, (d, b)| {
        *m.entry(d).or_default() += b;
        m
    });
    let mut total = 0usize;
    let mut floor = i32::MIN;
    for (i, (d, b)) in by_date.iter().rev().enumerate() {
        total += b;
        if total > budget && i > 0 {
            break;
        }
        floor = *d;
    }
    floor
}

/// The rows of `columns` by series, as (batch, row) positions; a row without an org or a date
/// touches no series. Keys are borrowed: one lookup and one owned key per series, not per row.
fn by_series<R: DailyRows>(columns: &[R]) -> HashMap<(&str, Option<&str>), Vec<Position>> {
    let mut groups: HashMap<(&str, Option<&str>), Vec<Position>> = HashMap::new();
    for (b, c) in columns.iter().enumerate() {
        let k = c.keys();
        for i in 0..k.len() {
            if let (Some(org), Some(_)) = (k.org(i), k.date(i)) {
                groups.entry((org, k.service(i))).or_default().push((b, i));
            }
        }
    }
    groups
}

/// Scores the days of one series from `lo` to `to` (a change from `lo` reaches the window's
/// days after the last touched day) over the days from `lo` − window, so each baseline is
/// complete.
fn rescore(days: &mut Days, lo: i32, to: i32, cfg: &AnomalyConfig) {
    let scored = Some(lo.saturating_sub(cfg.window_days))..=Some(to);
    let input: Vec<(i32, f64)> =
        days.range(scored.clone()).map(|(d, day)| (d.unwrap_or_default(), day.cost())).collect();
    for ((d, day), score) in days.range_mut(scored).zip(score_series(&input, cfg)) {
        if *d >= Some(lo) {
            day.score = score;
        }
    }
}

/// The key columns of daily rows or events: org, service, date.
struct Keys {
    org: StringArray,
    service: StringArray,
    date: Date32Array,
}

fn column(b: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("daily usage rows have no column {name}")))?;
    Ok(cast(c, to)?)
}

fn text_column(b: &RecordBatch, name: &str) -> Result<StringArray> {
    Ok(column(b, name, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn text(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

impl Keys {
    fn of(b: &RecordBatch) -> Result<Self> {
        Ok(Keys {
            org: text_column(b, "org_id")?,
            service: text_column(b, "service")?,
            date: column(b, "usage_date", &DataType::Date32)?.as_primitive::<Date32Type>().clone(),
        })
    }

    fn len(&self) -> usize {
        self.org.len()
    }

    fn org(&self, i: usize) -> Option<&str> {
        text(&self.org, i)
    }

    fn service(&self, i: usize) -> Option<&str> {
        text(&self.service, i)
    }

    fn date(&self, i: usize) -> Option<i32> {
        self.date.is_valid(i).then(|| self.date.value(i))
    }
}

/// Rows that add to daily features: the feature query's rows, or silver events.
trait DailyRows {
    fn keys(&self) -> &Keys;
    /// What row `i` adds to its day (no scores).
    fn sums(&self, i: usize) -> Result<Day>;
}

/// The feature columns of daily rows (the feature query's, or the table's).
struct Columns {
    keys: Keys,
    decimals: Vec<Decimal128Array>,
    tokens: Int64Array,
    events: Int64Array,
}

impl Columns {
    fn of(b: &RecordBatch) -> Result<Self> {
        let int = |n| column(b, n, &DataType::Int64).map(|a| a.as_primitive::<Int64Type>().clone());
        Ok(Columns {
            keys: Keys::of(b)?,
            decimals: DECIMALS
                .iter()
                .map(|n| column(b, n, &DECIMAL).map(|a| a.as_primitive::<Decimal128Type>().clone()))
                .collect::<Result<_>>()?,
            tokens: int("genai_tokens")?,
            events: int("events")?,
        })
    }
}

impl DailyRows for Columns {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    fn sums(&self, i: usize) -> Result<Day> {
        let int = |a: &Int64Array| if a.is_valid(i) { a.value(i) } else { 0 };
        let mut decimals = [None; 5];
        for (v, a) in decimals.iter_mut().zip(&self.decimals) {
            *v = a.is_valid(i).then(|| a.value(i));
        }
        Day::of(decimals, int(&self.tokens), int(&self.events))
    }
}

/// The columns of silver usage events the features sum.
struct EventColumns {
    keys: Keys,
    metric: StringArray,
    /// cost_usd, value, carbon_kg as `DECIMAL(18, 6)`.
    cost: Decimal128Array,
    value: Decimal128Array,
    carbon: Decimal128Array,
    tokens: Int64Array,
}

impl EventColumns {
    fn of_all(clean: &[RecordBatch]) -> Result<Vec<Self>> {
        clean.iter().filter(|b| b.num_rows() > 0).map(EventColumns::of).collect()
    }

    fn of(b: &RecordBatch) -> Result<Self> {
        let decimal = |n| column(b, n, &DECIMAL).map(|a| a.as_primitive::<Decimal128Type>().clone());
        Ok(EventColumns {
            keys: Keys::of(b)?,
            metric: text_column(b, "metric")?,
            cost: decimal("cost_usd")?,
            value: decimal("value")?,
            carbon: decimal("carbon_kg")?,
            tokens: column(b, "genai_tokens", &DataType::Int64)?.as_primitive::<Int64Type>().clone(),
        })
    }
}

impl DailyRows for EventColumns {
    fn keys(&self) -> &Keys {
        &self.keys
    }

    fn sums(&self, i: usize) -> Result<Day> {
        let decimal = |a: &Decimal128Array| a.is_valid(i).then(|| a.value(i));
        let metric = text(&self.metric, i);
        let value = |m: &str| if metric == Some(m) { decimal(&self.value) } else { None };
        let decimals = [
            decimal(&self.cost),
            value("requests"),
            value("cpu_hours"),
            value("storage_gb_hours"),
            decimal(&self.carbon),
        ];
        Day::of(decimals, if self.tokens.is_valid(i) { self.tokens.value(i) } else { 0 }, 1)
    }
}

/// The score columns of rows read from the table.
struct ScoreColumns {
    ints: [ArrayRef; 2],
    baseline: ArrayRef,
    floats: [ArrayRef; 3],
    flags: [ArrayRef; 4],
}

impl ScoreColumns {
    fn of(b: &RecordBatch) -> Result<Self> {
        let int = |n| column(b, n, &DataType::Int64);
        let float = |n| column(b, n, &DataType::Float64);
        let flag = |n| column(b, n, &DataType::Boolean);
        Ok(ScoreColumns {
            ints: [int("baseline_days")?, int("methods_flagged")?],
            baseline: column(b, "baseline_cost_usd", &DECIMAL)?,
            floats: [float("zscore")?, float("mad_score")?, float("pctl_ratio")?],
            flags: [flag("zscore_flag")?, flag("mad_flag")?, flag("pctl_flag")?, flag("is_anomaly")?],
        })
    }

    fn row(&self, i: usize) -> Score {
        let int = |a: &ArrayRef| a.as_primitive::<Int64Type>().value(i);
        let float = |a: &ArrayRef| {
            let a = a.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            a.is_valid(i).then(|| a.value(i))
        };
        let flag = |a: &ArrayRef| {
            let a = a.as_boolean();
            a.is_valid(i) && a.value(i)
        };
        let baseline = self.baseline.as_primitive::<Decimal128Type>();
        Score {
            baseline_days: int(&self.ints[0]) as usize,
            methods_flagged: int(&self.ints[1]) as u8,
            baseline_mean: baseline
                .is_valid(i)
                .then(|| baseline.value(i) as f64 / 10f64.powi(MONEY_SCALE as i32)),
            zscore: float(&self.floats[0]),
            mad_score: float(&self.floats[1]),
            pctl_ratio: float(&self.floats[2]),
            zscore_flag: flag(&self.flags[0]),
            mad_flag: flag(&self.flags[1]),
            pctl_flag: flag(&self.flags[2]),
            is_anomaly: flag(&self.flags[3]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feature row: (org, day, service, cost in micro-dollars, events).
    type Row<'a> = (&'a str, i32, Option<&'a str>, Option<i128>, i64);

    /// Feature rows as the feature query types them.
    fn features(rows: &[Row]) -> RecordBatch {
        let decimal = |v: Vec<Option<i128>>| -> ArrayRef {
            Arc::new(Decimal128Array::from(v).with_precision_and_scale(18, MONEY_SCALE).unwrap())
        };
        let n = rows.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("org_id", DataType::Utf8, true),
            Field::new("usage_date", DataType::Date32, true),
            Field::new("service", DataType::Utf8, true),
            Field::new("cost_usd", DECIMAL, true),
            Field::new("requests", DECIMAL, true),
            Field::new("cpu_hours", DECIMAL, true),
            Field::new("storage_gb_hours", DECIMAL, true),
            Field::new("genai_tokens", DataType::Int64, true),
            Field::new("carbon_kg", DECIMAL, true),
            Field::new("events", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                decimal(rows.iter().map(|r| r.3).collect()),
                decimal(rows.iter().map(|r| Some(r.4 as i128 * 1000)).collect()),
                decimal(vec![Some(0); n]),
                decimal(vec![Some(0); n]),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4 * 10))),
                decimal(rows.iter().map(|r| Some(r.4 as i128 * 7)).collect()),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
            ],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn batches_applied_one_after_another_equal_scoring_their_sum_once() {
        let cfg = AnomalyConfig { window_days: 5, min_baseline_days: 2, ..Default::default() };
        // Two series over 30 days, a spike, a null cost, a null service; the second batch
        // revisits old days of one series (late data) and adds a day to the other.
        let mut first = Vec::new();
        for d in 0..30 {
            first.push(("o1", 20_000 + d, Some("compute"), Some(1_000_000 + d as i128 * 1000), 2));
            if d % 3 == 0 {
                first.push(("o2", 20_000 + d, None, if d == 9 { None } else { Some(500_000) }, 1));
            }
        }
        let second = vec![
            ("o1", 20_012, Some("compute"), Some(40_000_000), 5),
            ("o1", 20_003, Some("compute"), Some(-10_000), 1),
            ("o2", 20_009, None, None, 1),
            ("o2", 20_040, None, Some(700_000), 3),
        ];
        let mut series = DailySeries::default();
        let all = series.apply(&[features(&first)], &cfg).unwrap();
        assert!(series.changed_batch(&all).is_err(), "rows are not read out unscored");
        series.score(&cfg);
        assert_eq!((series.rows_in(&all), series.changed_batch(&all).unwrap().num_rows()), (40, 40));
        let changed = series.apply(&[features(&second)], &cfg).unwrap();
        assert_eq!(series.rows_in(&changed), 15 + 8);
        series.score(&cfg);
        let changed = series.changed_batch(&changed).unwrap();
        // o1: days 3..=17 (12 + window); o2: days 9, 12, ..., 27 and 40 (every day from 9 on).
        assert_eq!(changed.num_rows(), 15 + 8);
        assert_eq!(series.len(), 41);

        // The same days summed first, then scored in one go by the rebuild's scoring.
        let mut summed: Vec<Row> = Vec::new();
        for r in first.iter().chain(&second) {
            match summed.iter_mut().find(|s| (s.0, s.1, s.2) == (r.0, r.1, r.2)) {
                Some(s) => {
                    s.3 = match (s.3, r.3) {
                        (None, None) => None,
                        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
                    };
                    s.4 += r.4;
                }
                None => summed.push(*r),
            }
        }
        let rows = summed;
        let once = features(&rows);
        let (_, expected) = super::super::score(&cfg, once.schema(), vec![once]).unwrap();
        let parts = series.to_batches().unwrap();
        let got = datafusion::arrow::compute::concat_batches(&parts[0].schema(), &parts).unwrap();
        // Both batches applied, then scored once (a gold step after a backlog): the same rows.
        let mut deferred = DailySeries::default();
        let a = deferred.apply(&[features(&first)], &cfg).unwrap();
        let b = deferred.apply(&[features(&second)], &cfg).unwrap();
        deferred.score(&cfg);
        assert_eq!(deferred.rows_in(&a.union(b)), 41);
        assert_eq!(deferred.to_batches().unwrap(), parts);
        // The rebuild orders null services last; the series order them first: compare as sets.
        let sorted = |b: &RecordBatch| {
            let mut lines: Vec<String> =
                datafusion::arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                    .unwrap()
                    .to_string()
                    .lines()
                    .map(str::to_string)
                    .collect();
            lines.sort();
            lines
        };
        assert_eq!(got.schema(), expected[0].schema());
        assert_eq!(sorted(&got), sorted(&expected[0]));
        // A null cost stays null until a cost arrives; a cost sums exactly.
        let line = sorted(&got).into_iter().find(|l| l.contains("o1") && l.contains("2024-10-16")).unwrap();
        assert!(line.contains("41.012000"), "{line}");
    }

    #[tokio::test]
    async fn events_summed_directly_equal_the_feature_query() {
        use datafusion::arrow::array::Float64Array;
        let cfg = AnomalyConfig { window_days: 3, min_baseline_days: 2, ..Default::default() };
        // (org, service, day, metric, value, cost in micro-dollars, carbon, tokens)
        type Event<'a> = (
            &'a str,
            Option<&'a str>,
            i32,
            Option<&'a str>,
            Option<f64>,
            Option<i128>,
            Option<f64>,
            Option<i64>,
        );
        let events: Vec<Event> = vec![
            ("o1", Some("compute"), 20_000, Some("requests"), Some(0.1), Some(1_000_000), Some(0.2), None),
            ("o1", Some("compute"), 20_000, Some("requests"), Some(0.2), Some(-10_000), Some(1e-7), None),
            ("o1", Some("compute"), 20_000, Some("cpu_hours"), Some(0.000_000_5), None, None, None),
            (
                "o1",
                Some("compute"),
                20_001,
                Some("storage_gb_hours"),
                Some(123_456.789_012_5),
                Some(5),
                Some(-0.25),
                None,
            ),
            ("o1", Some("compute"), 20_001, None, Some(7.0), Some(7), None, None),
            ("o1", Some("compute"), 20_002, Some("bytes"), None, Some(3_000_000), Some(2.5), None),
            ("o1", Some("compute"), 20_003, Some("requests"), None, Some(2_000_000), None, None),
            (
                "o2",
                Some("genai"),
                20_000,
                Some("requests"),
                Some(1.0),
                Some(500_000),
                Some(0.001),
                Some(1200),
            ),
            (
                "o2",
                Some("genai"),
                20_003,
                Some("cpu_hours"),
                Some(2.5),
                Some(600_000),
                Some(0.002),
                Some(800),
            ),
            ("o2", None, 20_002, Some("requests"), Some(3.0), Some(1), None, None),
        ];
        let schema = Arc::new(Schema::new(vec![
            Field::new("org_id", DataType::Utf8, true),
            Field::new("service", DataType::Utf8, true),
            Field::new("usage_date", DataType::Date32, true),
            Field::new("metric", DataType::Utf8, true),
            Field::new("value", DataType::Float64, true),
            Field::new("cost_usd", DECIMAL, true),
            Field::new("carbon_kg", DataType::Float64, true),
            Field::new("genai_tokens", DataType::Int64, true),
        ]));
        let clean = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.0))),
                Arc::new(StringArray::from(events.iter().map(|e| e.1).collect::<Vec<_>>())),
                Arc::new(Date32Array::from_iter_values(events.iter().map(|e| e.2))),
                Arc::new(StringArray::from(events.iter().map(|e| e.3).collect::<Vec<_>>())),
                Arc::new(Float64Array::from(events.iter().map(|e| e.4).collect::<Vec<_>>())),
                Arc::new(
                    Decimal128Array::from(events.iter().map(|e| e.5).collect::<Vec<_>>())
                        .with_precision_and_scale(18, MONEY_SCALE)
                        .unwrap(),
                ),
                Arc::new(Float64Array::from(events.iter().map(|e| e.6).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(events.iter().map(|e| e.7).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("clean", clean.clone()).unwrap();
        let df = ctx.sql(&super::super::features_sql("clean")).await.unwrap();
        let features = Arc::new(df.schema().as_arrow().clone());
        let by_query = df.collect().await.unwrap();

        let mut queried = DailySeries::default();
        queried.apply(&by_query, &cfg).unwrap();
        queried.score(&cfg);
        let mut direct = DailySeries::default();
        let changed = direct.apply_events(&[clean], features, &cfg).unwrap();
        direct.score(&cfg);
        assert_eq!(direct.rows_in(&changed), 7);
        assert_eq!(direct.series, queried.series);
        assert_eq!(direct.to_batches().unwrap(), queried.to_batches().unwrap());

        // Two batches' changes in one gold step: every row either names, each once.
        let both = changed.union(Changed::default());
        assert_eq!(direct.rows_in(&both), 7);
        let twice = Changed::default().union(both.clone()).union(both.clone());
        assert_eq!(direct.rows_in(&twice), 7);
        assert_eq!(direct.changed_batch(&twice).unwrap(), direct.changed_batch(&both).unwrap());
    }
}
