//! `cloudlake generate`: synthetic landing data with the bundled dataset's shape and flaws.
//!
//! Scale N gives N times the events (43,200 × N, in 120 unordered JSONL files spanning the whole
//! period) and proportionally more organisations, users, resources, tickets, touches, surveys
//! and invoices. The flaw rates follow `ABOUT.md`: numbers written as strings (3 %), null values
//! (2 %), null units (4.8 %, nearly all with a value), negative costs (0.5 %, most below −0.01),
//! cost spikes, the schema v1 → v2 switch on 2025-07-18 (v2 adds `carbon_kg`, and `genai_tokens`
//! on the genai service), USD invoices with rates other than 1.0, negative subtotals, empty
//! credits, NPS out of range, plan tiers disagreeing with `is_enterprise`, last logins before
//! creation, events before their resource's creation date.
//!
//! A [`Period`] of more days gives more events for the same organisations (what a stream that
//! runs for hours sees), and its files can be in time order with some late events, as a live feed
//! delivers them.
//!
//! Deterministic for a seed: every file has its own ChaCha8 stream derived from the seed and the
//! file's name, so the output does not depend on thread scheduling. Event files are written in
//! parallel, one thread per core.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{Error, Result};

/// Events in the bundled dataset (scale 1).
pub const EVENTS_PER_SCALE: u64 = 43_200;
/// Days the bundled dataset's events span.
pub const DAYS: u32 = 60;
/// Most days a period can span: from 2025-07-03 to 2026-10-26, so no event is in the future of
/// the day this generator was written (the pipeline rejects future events as implausible).
pub const MAX_DAYS: u32 = 480;
/// Event files, whatever the scale (each spans the whole period, in no order).
pub const EVENT_FILES: usize = 120;

const INDUSTRIES: &[&str] = &[
    "Education",
    "Media",
    "Manufacturing",
    "E-commerce",
    "Retail",
    "Healthcare",
    "Fintech",
    "Gaming",
    "Government",
    "Energy",
];
const NAME_A: &[&str] =
    &["Nimbus", "Nova", "Gamma", "Apex", "Delta", "Omega", "Alpha", "Beta", "Vertex", "Zenith"];
const NAME_B: &[&str] = &["Labs", "Tech", "Data", "Digital", "Cloud", "AI"];
const REGIONS: &[&str] =
    &["us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-northeast", "sa-east"];
const TIERS: &[&str] = &["free", "standard", "pro", "enterprise"];
const STAGES: &[&str] = &["churned", "lead", "active", "at_risk", "prospect"];
const SOURCES: &[&str] = &["partner", "event", "organic", "ads", "referral"];
const ROLES: &[&str] = &["devops", "developer", "ml_engineer", "data_engineer", "analyst", "admin"];
/// Services with their share of events in the real data.
const SERVICES: &[(&str, u32)] = &[
    ("compute", 29),
    ("storage", 18),
    ("database", 17),
    ("networking", 16),
    ("analytics", 11),
    ("genai", 9),
];
const STATES: &[&str] = &["running", "stopped", "terminated"];
const TAGS: &[&str] =
    &["env:prod", "env:dev", "pii:true", "team:core", "costcenter:alpha", "costcenter:beta"];
const CATEGORIES: &[&str] =
    &["performance", "security", "availability", "usability", "integration", "billing"];
const CAMPAIGNS: &[&str] =
    &["security_week", "webinar_finops", "upgrade_enterprise", "genai_launch", "upgrade_pro", "welcome"];
const CHANNELS: &[&str] = &["ads", "email", "in_app", "event"];
const COMMENTS: &[&str] = &[
    "Complex billing",
    "Love genAI features",
    "Missing features",
    "Stable but slow",
    "Great support",
    "Too expensive",
    "",
];

/// How the events spread over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Days from 2025-07-03 the events span ([`DAYS`] in the bundled data). Events per day stay
    /// those of the scale, so more days give more events for the same organisations.
    pub days: u32,
    /// Files in time order, as a live feed delivers them: file k of [`EVENT_FILES`] holds the
    /// k-th slice of the period, but 3 % of its events are 1 to 72 hours older than its slice and
    /// 0.3 % are from any earlier time (late data). Otherwise every file spans the whole period in
    /// no order, as the bundled files do.
    pub in_order: bool,
}

impl Default for Period {
    fn default() -> Self {
        Period { days: DAYS, in_order: false }
    }
}

/// What a generation wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GenerateReport {
    /// Output folder.
    pub out: PathBuf,
    /// Scale factor.
    pub scale: u32,
    /// Seed.
    pub seed: u64,
    /// The events' period.
    pub days: u32,
    /// Whether the files are in time order.
    pub in_order: bool,
    /// Events written.
    pub events: u64,
    /// Organisations written.
    pub orgs: usize,
    /// Bytes of JSONL written.
    pub event_bytes: u64,
    /// Wall time of the event files, seconds.
    pub event_seconds: f64,
    /// Wall time of everything, seconds.
    pub seconds: f64,
}

/// The entity ids the event files refer to.
struct Masters {
    org_ids: Vec<String>,
    resources: Vec<Resource>,
}

struct Resource {
    id: String,
    org: usize,
    service: &'static str,
    region: &'static str,
    created: NaiveDate,
}

fn day0() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 7, 3).expect("valid date")
}

fn v2_from() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 7, 18).expect("valid date")
}

fn id(rng: &mut ChaCha8Rng, prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn date_between(rng: &mut ChaCha8Rng, from: NaiveDate, days: i64) -> NaiveDate {
    from + Duration::days(rng.random_range(0..days.max(1)))
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// A per-file random stream: the seed mixed with the file name, so files are independent.
fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    let mixed = xxhash_rust::xxh3::xxh3_64_with_seed(name.as_bytes(), seed);
    ChaCha8Rng::seed_from_u64(mixed)
}

/// Generates landing data at `scale` into `out` (created if needed), with the bundled period.
pub fn generate(scale: u32, out: &Path, seed: u64) -> Result<GenerateReport> {
    generate_over(scale, out, seed, Period::default())
}

/// Generates landing data at `scale` into `out` (created if needed), the events over `period`.
pub fn generate_over(scale: u32, out: &Path, seed: u64, period: Period) -> Result<GenerateReport> {
    if scale == 0 {
        return Err(Error::Usage("--scale must be at least 1".into()));
    }
    if !(1..=MAX_DAYS).contains(&period.days) {
        return Err(Error::Usage(format!("--days must be between 1 and {MAX_DAYS}")));
    }
    let started = Instant::now();
    let events_dir = out.join("usage_events_stream");
    std::fs::create_dir_all(&events_dir).map_err(|e| Error::io(&events_dir, e))?;
    let n = scale as usize;
    let (orgs, masters) = write_masters(out, n, seed)?;

    let events_started = Instant::now();
    let per_file = EVENTS_PER_SCALE as usize * n * period.days as usize / DAYS as usize / EVENT_FILES;
    let files = (0..EVENT_FILES).collect();
    let bytes =
        crate::parallel::map(files, |i| write_event_file(&events_dir, i, per_file, &masters, seed, period))?;
    let event_bytes = bytes.iter().sum();
    Ok(GenerateReport {
        out: out.to_path_buf(),
        scale,
        seed,
        days: period.days,
        in_order: period.in_order,
        events: (per_file * EVENT_FILES) as u64,
        orgs,
        event_bytes,
        event_seconds: events_started.elapsed().as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Writes the seven CSV sources; returns the org count and what events refer to.
fn write_masters(out: &Path, n: usize, seed: u64) -> Result<(usize, Masters)> {
    let mut rng = stream(seed, "masters");
    let org_count = 80 * n;
    let signup0 = NaiveDate::from_ymd_opt(2025, 5, 10).expect("valid date");
    let mut org_ids = Vec::with_capacity(org_count);
    let mut csv = String::from(
        "org_id,org_name,industry,hq_region,plan_tier,is_enterprise,signup_date,sales_rep,lifecycle_stage,marketing_source,nps_score\n",
    );
    for i in 0..org_count {
        let id = id(&mut rng, "org_", 8);
        let tier = pick(&mut rng, TIERS);
        // About a third of orgs disagree between plan_tier and is_enterprise.
        let enterprise = if rng.random_bool(0.31) { tier != "enterprise" } else { tier == "enterprise" };
        let nps = if rng.random_bool(0.14) {
            String::new()
        } else if rng.random_bool(0.0125) {
            "101.0".into()
        } else {
            format!("{:.1}", rng.random_range(-20..70) as f64)
        };
        let _ = writeln!(
            csv,
            "{id},{} {} {i},{},{},{tier},{},{},rep_{},{},{},{nps}",
            pick(&mut rng, NAME_A),
            pick(&mut rng, NAME_B),
            pick(&mut rng, INDUSTRIES),
            pick(&mut rng, REGIONS),
            py_bool(enterprise),
            date_between(&mut rng, signup0, 60),
            (b'a' + rng.random_range(0..5u8)) as char,
            pick(&mut rng, STAGES),
            pick(&mut rng, SOURCES),
        );
        org_ids.push(id);
    }
    write_file(&out.join("customers_orgs.csv"), &csv)?;

    let mut csv = String::from("user_id,org_id,email,role,active,created_at,last_login\n");
    for _ in 0..800 * n {
        let id = id(&mut rng, "user_", 8);
        let created = date_between(&mut rng, NaiveDate::from_ymd_opt(2025, 5, 1).expect("valid date"), 110);
        let login = if rng.random_bool(0.17) {
            String::new()
        } else if rng.random_bool(0.35) {
            (created - Duration::days(rng.random_range(1..60))).to_string()
        } else {
            (created + Duration::days(rng.random_range(0..40))).to_string()
        };
        let org = &org_ids[rng.random_range(0..org_count)];
        let _ = writeln!(
            csv,
            "{id},{org},{id}@example.com,{},{},{created},{login}",
            pick(&mut rng, ROLES),
            py_bool(rng.random_bool(0.8))
        );
    }
    write_file(&out.join("users.csv"), &csv)?;

    let mut resources = Vec::with_capacity(400 * n);
    let mut csv = String::from("resource_id,org_id,service,region,created_at,state,tags_json\n");
    for _ in 0..400 * n {
        let r = Resource {
            id: id(&mut rng, "res_", 8),
            org: rng.random_range(0..org_count),
            service: weighted(&mut rng, SERVICES),
            region: pick(&mut rng, REGIONS),
            // 2025-03-20 .. 2025-08-31: about 18 % of events then predate their resource's creation
            // date, as 17 % do in the real data.
            created: date_between(&mut rng, NaiveDate::from_ymd_opt(2025, 3, 20).expect("valid date"), 165),
        };
        let tags = if rng.random_bool(0.2) {
            String::new()
        } else {
            let k = rng.random_range(1..=3);
            let t: Vec<String> = (0..k).map(|_| format!("\"\"{}\"\"", pick(&mut rng, TAGS))).collect();
            format!("\"[{}]\"", t.join(", "))
        };
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{tags}",
            r.id,
            org_ids[r.org],
            r.service,
            r.region,
            r.created,
            pick(&mut rng, STATES)
        );
        resources.push(r);
    }
    write_file(&out.join("resources.csv"), &csv)?;

    let mut csv =
        String::from("ticket_id,org_id,category,severity,created_at,resolved_at,csat,sla_breached\n");
    for _ in 0..1000 * n {
        let created = date_between(&mut rng, NaiveDate::from_ymd_opt(2025, 6, 1).expect("valid date"), 92);
        let severity = weighted(&mut rng, &[("low", 40), ("medium", 34), ("high", 20), ("critical", 6)]);
        let resolved = if rng.random_bool(0.24) {
            String::new()
        } else {
            (created + Duration::days(rng.random_range(0..20))).to_string()
        };
        let csat = if rng.random_bool(0.25) {
            String::new()
        } else if rng.random_bool(0.05) {
            "6.0".into()
        } else {
            format!("{}.0", rng.random_range(1..=5))
        };
        let _ = writeln!(
            csv,
            "{},{},{},{severity},{created},{resolved},{csat},{}",
            id(&mut rng, "tkt_", 8),
            org_ids[rng.random_range(0..org_count)],
            pick(&mut rng, CATEGORIES),
            py_bool(rng.random_bool(0.08))
        );
    }
    write_file(&out.join("support_tickets.csv"), &csv)?;

    let mut csv = String::from("touch_id,org_id,campaign,channel,timestamp,clicked,converted\n");
    for _ in 0..1500 * n {
        let clicked = rng.random_bool(0.3);
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{}",
            id(&mut rng, "mkt_", 8),
            org_ids[rng.random_range(0..org_count)],
            pick(&mut rng, CAMPAIGNS),
            pick(&mut rng, CHANNELS),
            date_between(&mut rng, NaiveDate::from_ymd_opt(2025, 5, 1).expect("valid date"), 120),
            py_bool(clicked),
            py_bool(rng.random_bool(if clicked { 0.3 } else { 0.07 }))
        );
    }
    write_file(&out.join("marketing_touches.csv"), &csv)?;

    let mut csv = String::from("org_id,survey_date,nps_score,comment\n");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 92 * n {
        let org = rng.random_range(0..org_count);
        let date = date_between(&mut rng, NaiveDate::from_ymd_opt(2025, 5, 20).expect("valid date"), 104);
        if !seen.insert((org, date)) {
            continue;
        }
        let nps = if rng.random_bool(0.2) {
            String::new()
        } else {
            format!("{:.1}", rng.random_range(-16..=68) as f64)
        };
        let _ = writeln!(csv, "{},{date},{nps},{}", org_ids[org], pick(&mut rng, COMMENTS));
    }
    write_file(&out.join("nps_surveys.csv"), &csv)?;

    let mut csv =
        String::from("invoice_id,org_id,month,subtotal,credits,taxes,currency,exchange_rate_to_usd\n");
    for org in &org_ids {
        let currency = weighted(&mut rng, &[("USD", 67), ("EUR", 17), ("ARS", 16)]);
        for month in ["2025-06-01", "2025-07-01", "2025-08-01"] {
            let mut subtotal = rng.random_range(50_000..250_000) as f64 / 100.0;
            if rng.random_bool(0.054) {
                subtotal = -subtotal;
            }
            let credits = if rng.random_bool(0.57) {
                String::new()
            } else {
                format!("{:.2}", rng.random_range(100..8_000) as f64 / 100.0)
            };
            let rate = match currency {
                // The feed's USD rates are inconsistent: 0.85..1.12 instead of exactly 1.0.
                "USD" => format!("{:.5}", rng.random_range(85_000..112_000) as f64 / 100_000.0),
                "EUR" => format!("{:.5}", rng.random_range(107_000..111_000) as f64 / 100_000.0),
                _ => format!("{:.5}", rng.random_range(140..170) as f64 / 100_000.0),
            };
            let _ = writeln!(
                csv,
                "{},{org},{month},{subtotal:.2},{credits},{:.2},{currency},{rate}",
                id(&mut rng, "inv_", 8),
                (subtotal.abs() * 0.21 * 100.0).round() / 100.0
            );
        }
    }
    write_file(&out.join("billing_monthly.csv"), &csv)?;
    Ok((org_count, Masters { org_ids, resources }))
}

fn weighted(rng: &mut ChaCha8Rng, items: &[(&'static str, u32)]) -> &'static str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (item, w) in items {
        if x < *w {
            return item;
        }
        x -= w;
    }
    items[items.len() - 1].0
}

/// An event's time as (day from [`day0`], minute of the day): anywhere in the period, or (in
/// order) in file `index`'s slice of it, some of them late.
fn event_time(rng: &mut ChaCha8Rng, index: usize, period: Period) -> (i64, i64) {
    let days = i64::from(period.days);
    if !period.in_order {
        return (rng.random_range(0..days), rng.random_range(0..1440));
    }
    let minutes = days * 1440;
    let files = EVENT_FILES as i64;
    let (from, to) = (index as i64 * minutes / files, (index as i64 + 1) * minutes / files);
    let roll: f64 = rng.random();
    let m = if roll < 0.003 {
        rng.random_range(0..from.max(1))
    } else if roll < 0.033 {
        (rng.random_range(from..to.max(from + 1)) - rng.random_range(60..=72 * 60)).max(0)
    } else {
        rng.random_range(from..to.max(from + 1))
    };
    (m / 1440, m % 1440)
}

/// Writes one event file; returns its size in bytes.
fn write_event_file(
    dir: &Path,
    index: usize,
    events: usize,
    masters: &Masters,
    seed: u64,
    period: Period,
) -> Result<u64> {
    let name = format!("events_part_{index:04}.jsonl");
    let mut rng = stream(seed, &name);
    let mut buf: Vec<u8> = Vec::with_capacity(events * 260);
    let v2 = v2_from();
    for _ in 0..events {
        let r = &masters.resources[rng.random_range(0..masters.resources.len())];
        let (day, minute) = event_time(&mut rng, index, period);
        let date = day0() + Duration::days(day);
        let metric = weighted(&mut rng, &[("requests", 45), ("cpu_hours", 25), ("storage_gb_hours", 30)]);
        let unit = match metric {
            "requests" => "count",
            "cpu_hours" => "hours",
            _ => "gb_hours",
        };
        let value: f64 = match metric {
            "requests" => rng.random_range(0..600) as f64,
            "cpu_hours" => rng.random_range(0..60_000) as f64 / 10_000.0,
            _ => rng.random_range(0..500_000) as f64 / 10_000.0,
        };
        let roll: f64 = rng.random();
        let cost: f64 = if roll < 0.0049 {
            -(rng.random_range(2..500) as f64) / 100.0
        } else if roll < 0.005 {
            -(rng.random_range(1..=10) as f64) / 10_000.0
        } else if roll < 0.006 {
            rng.random_range(20_000..3_170_000) as f64 / 10_000.0
        } else {
            // Most events cost around 1 USD, with a long right tail.
            let base: f64 = rng.random_range(1..40_000) as f64 / 10_000.0;
            (base * base / 2.0 * 10_000.0).round() / 10_000.0
        };
        let version = if date < v2 { 1 } else { 2 };
        let _ = write!(
            buf,
            "{{\"event_id\": \"{}\", \"timestamp\": \"{}T{:02}:{:02}:00Z\", \"org_id\": \"{}\", \"resource_id\": \"{}\", \"service\": \"{}\", \"region\": \"{}\", \"metric\": \"{metric}\", \"value\": ",
            id(&mut rng, "evt_", 12),
            date,
            minute / 60,
            minute % 60,
            org_id_of(masters, r),
            r.id,
            r.service,
            r.region,
        );
        let v: f64 = rng.random();
        if v < 0.02 {
            buf.extend_from_slice(b"null");
        } else if v < 0.05 {
            let _ = write!(buf, "\"{value:?}\"");
        } else {
            let _ = write!(buf, "{value:?}");
        }
        if rng.random_bool(0.048) && v >= 0.001 {
            buf.extend_from_slice(b", \"unit\": null");
        } else {
            let _ = write!(buf, ", \"unit\": \"{unit}\"");
        }
        let _ = write!(buf, ", \"cost_usd_increment\": {cost:?}, \"schema_version\": {version}");
        if version == 2 {
            let carbon = (cost.max(0.0) * 0.004 * 1_000_000.0).round() / 1_000_000.0;
            let _ = write!(buf, ", \"carbon_kg\": {carbon:?}");
            if r.service == "genai" {
                let _ = write!(buf, ", \"genai_tokens\": {}", rng.random_range(50..2_000));
            }
        }
        buf.extend_from_slice(b"}\n");
    }
    let path = dir.join(&name);
    let mut f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    f.write_all(&buf).map_err(|e| Error::io(&path, e))?;
    Ok(buf.len() as u64)
}

fn org_id_of<'a>(masters: &'a Masters, r: &Resource) -> &'a str {
    masters.org_ids.get(r.org).map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, b, c) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(1, a.path(), 7).unwrap();
        generate(1, b.path(), 7).unwrap();
        generate(1, c.path(), 8).unwrap();
        for f in ["customers_orgs.csv", "billing_monthly.csv", "usage_events_stream/events_part_0042.jsonl"] {
            let read = |d: &tempfile::TempDir| std::fs::read(d.path().join(f)).unwrap();
            assert_eq!(read(&a), read(&b), "{f}");
            assert_ne!(read(&a), read(&c), "{f}");
        }
    }

    #[test]
    fn scale_multiplies_events_and_masters() {
        let d = tempfile::tempdir().unwrap();
        let r = generate(2, d.path(), 1).unwrap();
        assert_eq!((r.events, r.orgs), (86_400, 160));
        let lines = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap().lines().count() - 1;
        assert_eq!(lines("users.csv"), 1_600);
        assert_eq!(lines("billing_monthly.csv"), 480);
        assert_eq!(std::fs::read_dir(d.path().join("usage_events_stream")).unwrap().count(), EVENT_FILES);
        assert!(generate(0, d.path(), 1).is_err());
        assert!(generate_over(1, d.path(), 1, Period { days: MAX_DAYS + 1, in_order: false }).is_err());
    }

    /// Event dates of a file, in its order.
    fn dates(path: &Path) -> Vec<NaiveDate> {
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                NaiveDate::parse_from_str(&v["timestamp"].as_str().unwrap()[..10], "%Y-%m-%d").unwrap()
            })
            .collect()
    }

    #[test]
    fn more_days_more_events_for_the_same_orgs_and_in_order_files_follow_time() {
        let d = tempfile::tempdir().unwrap();
        let r = generate_over(1, d.path(), 3, Period { days: 240, in_order: true }).unwrap();
        assert_eq!((r.events, r.orgs), (4 * EVENTS_PER_SCALE, 80));
        let events = d.path().join("usage_events_stream");
        let (first, last) =
            (dates(&events.join("events_part_0000.jsonl")), dates(&events.join("events_part_0119.jsonl")));
        // File 0 holds the first 2 days; the last file the last 2, with a few late events.
        assert!(first.iter().all(|t| *t < day0() + Duration::days(2)));
        let late = last.iter().filter(|t| **t < day0() + Duration::days(238)).count();
        assert!(late > 0 && late * 10 < last.len(), "{late} late of {}", last.len());
        assert!(last.iter().all(|t| *t < day0() + Duration::days(240)));
        // Unordered files span the whole period.
        let u = tempfile::tempdir().unwrap();
        generate_over(1, u.path(), 3, Period { days: 240, in_order: false }).unwrap();
        let spread = dates(&u.path().join("usage_events_stream/events_part_0000.jsonl"));
        assert!(spread.iter().any(|t| *t > day0() + Duration::days(200)));
        assert!(spread.iter().any(|t| *t < day0() + Duration::days(40)));
    }
}
