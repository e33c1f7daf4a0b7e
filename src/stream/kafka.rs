//! The Kafka source (one JSON event per message, the same JSON as the landing files) and the
//! producer that replays landing files into a topic.
//!
//! The consumer does not use consumer-group offsets: the stream's offsets live in its checkpoint
//! and commit with bronze (see [`super::checkpoint`]). Each batch is planned as exact offset ranges
//! `[start, end)` per partition (`end` at most the partition's high watermark), then read by
//! assigning those partitions at `start` — so a replay after a crash reads the same messages.
//! In lineage a message is `source_file = kafka:<topic>/<partition>`, `source_line = offset`.
//! Broker outages are waited out (librdkafka reconnects) up to the configured timeout without
//! progress; offsets deleted by retention before they were read are an error, not a silent skip.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::bronze::{self, usage_events};
use crate::landing::{IngestMeta, Landed, SOURCE_LINE};
use crate::{Error, Result};

use super::checkpoint::Input;

/// A topic followed by exact offset ranges.
pub struct KafkaSource {
    brokers: String,
    topic: String,
    timeout: Duration,
    consumer: Arc<BaseConsumer>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("brokers", &self.brokers).field("topic", &self.topic).finish()
    }
}

fn kafka_err(what: &str, e: KafkaError) -> Error {
    Error::Kafka(format!("{what}: {e}"))
}

impl KafkaSource {
    /// A consumer of `topic` at `brokers` (comma-separated `host:port`). Connecting is lazy.
    pub fn new(brokers: &str, topic: &str, group: &str, timeout: Duration) -> Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760")
            .set("queued.max.messages.kbytes", "262144")
            .create()
            .map_err(|e| kafka_err("cannot create the Kafka consumer", e))?;
        Ok(KafkaSource {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            timeout,
            consumer: Arc::new(consumer),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Per partition, the `[low, high)` offsets the broker holds now (empty when the topic does
    /// not exist yet). Retries until the timeout while the broker is unreachable.
    pub async fn watermarks(&self) -> Result<BTreeMap<i32, (i64, i64)>> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let (timeout, brokers) = (self.timeout, self.brokers.clone());
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            loop {
                let last_error = match watermarks_once(&consumer, &topic) {
                    Ok(w) => return Ok(w),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() >= timeout {
                    return Err(Error::Kafka(format!(
                        "no answer from the brokers at {brokers} for {} s: {last_error}",
                        timeout.as_secs()
                    )));
                }
                tracing::warn!(error = %last_error, "Kafka metadata unavailable; retrying.");
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .await
        .map_err(|e| Error::task("Kafka metadata task", e))?
    }

    /// The next batch from `position` (next offset per partition; a new partition starts at its
    /// low watermark): at most `max_events` messages, and no further than `upto` when given.
    pub async fn plan(
        &self,
        position: &BTreeMap<i32, i64>,
        max_events: u64,
        upto: Option<&BTreeMap<i32, i64>>,
    ) -> Result<Input> {
        let marks = self.watermarks().await?;
        // What each partition has to give: (partition, start, end of what is available).
        let mut available = Vec::new();
        for (&p, &(low, high)) in &marks {
            let start = position.get(&p).copied().unwrap_or(low);
            if start < low {
                return Err(Error::Kafka(format!(
                    "topic {} partition {p}: offsets {start}..{low} were deleted (retention) before cloudlake read them",
                    self.topic
                )));
            }
            let end = upto.and_then(|u| u.get(&p)).map_or(high, |limit| high.min(*limit));
            if end > start {
                available.push((p, start, end));
            }
        }
        Ok(Input::Kafka { topic: self.topic.clone(), ranges: share_out(&available, max_events) })
    }

    /// Reads exactly the messages of `ranges` into typed rows and rejects. Fetching and parsing
    /// run on a blocking thread, so a read overlaps the previous batch's downstream work.
    pub async fn read(&self, ranges: &[(i32, i64, i64)], meta: &IngestMeta) -> Result<Landed> {
        let consumer = self.consumer.clone();
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        let (ranges, meta) = (ranges.to_vec(), meta.clone());
        tokio::task::spawn_blocking(move || {
            let buffers = read_ranges(&consumer, &topic, &ranges, timeout)?;
            // Parsed on every core: each partition's lines in about cores / partitions pieces.
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let parts = cores.div_ceil(buffers.len().max(1));
            let pieces: Vec<(String, i64, &[u8])> = buffers
                .iter()
                .flat_map(|(p, start, bytes)| {
                    let name = format!("kafka:{topic}/{p}");
                    split_lines(bytes, parts)
                        .into_iter()
                        .map(move |(before, piece)| (name.clone(), start - 1 + before, piece))
                })
                .collect();
            let parsed = crate::parallel::map(pieces, |(name, shift, piece)| {
                let mut part = bronze::land_bytes(&usage_events::SOURCE, piece, &name, &meta)?;
                shift_lines(&mut part, shift)?;
                Ok(part)
            })?;
            let mut landed = Landed::default();
            for part in parsed {
                landed.absorb(part);
            }
            Ok(landed)
        })
        .await
        .map_err(|e| Error::task("Kafka read task", e))?
    }
}

/// Up to `max_events` messages from `available` (partition, start, end) ranges: an equal share
/// each, and what a partition cannot fill goes to the others, so a batch is full whenever
/// that many messages wait.
fn share_out(available: &[(i32, i64, i64)], max_events: u64) -> Vec<(i32, i64, i64)> {
    let mut take: Vec<i64> = vec![0; available.len()];
    let mut left = i64::try_from(max_events).unwrap_or(i64::MAX);
    loop {
        let open: Vec<usize> =
            (0..available.len()).filter(|&i| available[i].1 + take[i] < available[i].2).collect();
        if open.is_empty() || left <= 0 {
            break;
        }
        let share = (left / open.len() as i64).max(1);
        for i in open {
            let more = share.min(available[i].2 - available[i].1 - take[i]).min(left);
            take[i] += more;
            left -= more;
        }
    }
    available
        .iter()
        .zip(take)
        .filter(|(_, t)| *t > 0)
        .map(|(&(p, start, _), t)| (p, start, start + t))
        .collect()
}

fn watermarks_once(consumer: &BaseConsumer, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| kafka_err("cannot read the topic's metadata", e))?;
    let mut out = BTreeMap::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        if t.error().is_some() {
            // Unknown topic (not created yet): nothing to read.
            continue;
        }
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .map_err(|e| kafka_err("cannot read the partition offsets", e))?;
            out.insert(p.id(), (low, high));
        }
    }
    Ok(out)
}

/// Polls the assigned ranges; per partition, the bytes of one line per offset from `start`
/// (a gap, e.g. a transaction marker, is an empty line, which is not a record).
fn read_ranges(
    consumer: &BaseConsumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> Result<Vec<(i32, i64, Vec<u8>)>> {
    let mut tpl = TopicPartitionList::new();
    let mut next: BTreeMap<i32, (i64, i64, Vec<u8>)> = BTreeMap::new();
    for &(p, start, end) in ranges.iter().filter(|r| r.2 > r.1) {
        tpl.add_partition_offset(topic, p, Offset::Offset(start))
            .map_err(|e| kafka_err("cannot assign a partition", e))?;
        next.insert(p, (start, end, Vec::with_capacity(((end - start) as usize).saturating_mul(300))));
    }
    consumer.assign(&tpl).map_err(|e| kafka_err("cannot assign the partitions", e))?;
    let mut last_progress = Instant::now();
    let mut last_warning: Option<Instant> = None;
    while next.values().any(|(n, end, _)| n < end) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                let Some((n, end, buf)) = next.get_mut(&msg.partition()) else { continue };
                let off = msg.offset();
                if off < *n || off >= *end {
                    continue;
                }
                while *n < off {
                    buf.push(b'\n');
                    *n += 1;
                }
                let payload = msg.payload().unwrap_or_default();
                buf.extend(payload.iter().map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b }));
                buf.push(b'\n');
                *n = off + 1;
                last_progress = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                if last_warning.is_none_or(|w| w.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(error = %e, "Kafka read error; retrying.");
                    last_warning = Some(Instant::now());
                }
                if matches!(
                    e,
                    KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange)
                ) {
                    let _ = consumer.assign(&TopicPartitionList::new());
                    return Err(kafka_err(
                        "a planned offset is no longer in the topic (deleted by retention?)",
                        e,
                    ));
                }
            }
        }
        if last_progress.elapsed() > timeout {
            let _ = consumer.assign(&TopicPartitionList::new());
            let missing: Vec<String> = next
                .iter()
                .filter(|(_, v)| v.0 < v.1)
                .map(|(p, v)| format!("{p}@{}..{}", v.0, v.1))
                .collect();
            return Err(Error::Kafka(format!(
                "no message from topic {topic} for {} s while offsets {} were still to read",
                timeout.as_secs(),
                missing.join(", ")
            )));
        }
    }
    consumer.assign(&TopicPartitionList::new()).map_err(|e| kafka_err("cannot release the partitions", e))?;
    Ok(next.into_iter().map(|(p, (_, _, buf))| (p, start_of(ranges, p), buf)).collect())
}

/// `bytes` cut into about `parts` pieces at line ends: (lines before the piece, piece).
fn split_lines(bytes: &[u8], parts: usize) -> Vec<(i64, &[u8])> {
    let size = bytes.len().div_ceil(parts.max(1)).max(1);
    let mut out = Vec::with_capacity(parts);
    let (mut from, mut before) = (0, 0i64);
    while from < bytes.len() {
        let mut to = (from + size).min(bytes.len());
        to = bytes[to - 1..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |i| to + i);
        let piece = &bytes[from..to];
        out.push((before, piece));
        before += piece.iter().filter(|b| **b == b'\n').count() as i64;
        from = to;
    }
    out
}

fn start_of(ranges: &[(i32, i64, i64)], p: i32) -> i64 {
    ranges.iter().find(|r| r.0 == p).map_or(0, |r| r.1)
}

/// Adds `delta` to every `source_line` (rows and rejects): line numbers become offsets.
fn shift_lines(landed: &mut Landed, delta: i64) -> Result<()> {
    for r in &mut landed.rejects {
        r.line = (r.line as i64 + delta).max(0) as u64;
    }
    let mut out = Vec::with_capacity(landed.batches.len());
    for b in landed.batches.drain(..) {
        let Ok(i) = b.schema().index_of(SOURCE_LINE) else {
            out.push(b);
            continue;
        };
        let lines = b.column(i).as_primitive::<Int64Type>();
        let shifted: Int64Array = lines.iter().map(|l| l.map(|l| l + delta)).collect();
        let mut columns = b.columns().to_vec();
        columns[i] = Arc::new(shifted) as Arc<dyn Array>;
        out.push(RecordBatch::try_new(b.schema(), columns)?);
    }
    landed.batches = out;
    Ok(())
}

/// What [`produce`] sent.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProduceReport {
    /// Files read.
    pub files: usize,
    /// Messages delivered (acknowledged by the brokers).
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Wall time, milliseconds.
    pub millis: u64,
}

#[derive(Default)]
struct DeliveryCount {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for DeliveryCount {}

impl ProducerContext for DeliveryCount {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Replays JSONL files into `topic`, one message per non-blank line, in file and line order, with
/// an idempotent producer (a retried send is not duplicated). Creates the topic with `partitions`
/// partitions when it does not exist. Messages go to the topic's partitions in turn, a block of
/// [`PRODUCE_BLOCK`] lines each, so a replay spreads evenly and the same way every time
/// (librdkafka's sticky partitioner would put a fast burst into a single partition).
pub async fn produce(
    brokers: &str,
    topic: &str,
    files: Vec<PathBuf>,
    partitions: i32,
) -> Result<ProduceReport> {
    ensure_topic(brokers, topic, partitions).await?;
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || produce_blocking(&brokers, &topic, &files))
        .await
        .map_err(|e| Error::task("Kafka producer task", e))?
}

async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| kafka_err("cannot create the Kafka admin client", e))?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&[NewTopic::new(topic, partitions.max(1), TopicReplication::Fixed(1))], &opts)
        .await
        .map_err(|e| kafka_err(&format!("cannot create topic {topic} at {brokers}"), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(Error::Kafka(format!("cannot create topic {t}: {code}"))),
        }
    }
    Ok(())
}

/// Lines sent to one partition before the next partition's turn.
pub const PRODUCE_BLOCK: u64 = 1_000;

/// The partition of the `n`-th message (from 0) of a replay into `count` partitions.
fn produce_partition(n: u64, count: i32) -> i32 {
    ((n / PRODUCE_BLOCK) % count.max(1) as u64) as i32
}

fn produce_blocking(brokers: &str, topic: &str, files: &[PathBuf]) -> Result<ProduceReport> {
    let started = Instant::now();
    let producer: BaseProducer<DeliveryCount> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "120000")
        .create_with_context(DeliveryCount::default())
        .map_err(|e| kafka_err("cannot create the Kafka producer", e))?;
    let md = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| kafka_err(&format!("cannot read the metadata of topic {topic}"), e))?;
    let count = md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len()) as i32;
    if count == 0 {
        return Err(Error::Kafka(format!("topic {topic} has no partitions at {brokers}")));
    }
    let mut report = ProduceReport { files: files.len(), ..Default::default() };
    let mut sent = 0u64;
    for path in files {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        for line in crate::landing::lines(&bytes) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let mut record =
                BaseRecord::<(), [u8]>::to(topic).payload(line).partition(produce_partition(sent, count));
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => return Err(kafka_err("cannot send a message", e)),
                }
            }
            sent += 1;
            report.bytes += line.len() as u64;
            if sent.is_multiple_of(10_000) {
                producer.poll(Duration::ZERO);
            }
        }
    }
    producer.flush(Duration::from_secs(120)).map_err(|e| kafka_err("cannot flush the producer", e))?;
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = ctx.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        return Err(Error::Kafka(format!("{failed} of {sent} messages were not delivered: {first}")));
    }
    report.messages = ctx.delivered.load(Ordering::Relaxed);
    report.millis = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn a_replay_takes_the_partitions_in_turn_a_block_each() {
        let parts: Vec<i32> = (0..7_000).step_by(1_000).map(|n| produce_partition(n, 3)).collect();
        assert_eq!(parts, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(produce_partition(999, 3), 0);
        assert_eq!(produce_partition(1_000, 3), 1);
        assert_eq!(produce_partition(5_000, 1), 0);
    }

    #[test]
    fn a_batch_is_filled_from_the_partitions_that_still_have_messages() {
        // Equal shares while every partition has enough.
        assert_eq!(share_out(&[(0, 0, 100), (1, 10, 100)], 100), vec![(0, 0, 50), (1, 10, 60)]);
        // Partition 0 has 20: partition 1 gives the rest.
        assert_eq!(share_out(&[(0, 80, 100), (1, 0, 1000)], 100), vec![(0, 80, 100), (1, 0, 80)]);
        // Less than asked in all: everything; an odd share is not lost.
        assert_eq!(share_out(&[(0, 0, 3), (1, 0, 4)], 100), vec![(0, 0, 3), (1, 0, 4)]);
        assert_eq!(
            share_out(&[(0, 0, 10), (1, 0, 10), (2, 0, 10)], 10).iter().map(|r| r.2 - r.1).sum::<i64>(),
            10
        );
        assert!(share_out(&[], 10).is_empty());
    }

    #[test]
    fn line_numbers_become_offsets() {
        let meta = IngestMeta { run_id: "r".into(), ingest_ts_micros: 0 };
        let bytes = b"{\"event_id\": \"a\"}\n\n{bad\n";
        let mut landed = bronze::land_bytes(&usage_events::SOURCE, bytes, "kafka:t/0", &meta).unwrap();
        shift_lines(&mut landed, 100 - 1).unwrap();
        let lines =
            landed.batches[0].column_by_name(SOURCE_LINE).unwrap().as_primitive::<Int64Type>().value(0);
        assert_eq!(lines, 100);
        assert_eq!(landed.rejects[0].line, 102);
    }

    #[test]
    fn pieces_cut_at_line_ends_keep_every_line_and_its_offset() {
        let meta = IngestMeta { run_id: "r".into(), ingest_ts_micros: 0 };
        let mut bytes = Vec::new();
        for i in 0..50 {
            if i % 7 == 3 {
                bytes.extend_from_slice(b"\n"); // a gap (transaction marker)
            } else {
                bytes.extend_from_slice(format!("{{\"event_id\": \"e{i}\"}}\n").as_bytes());
            }
        }
        for parts in [1, 2, 3, 8, 500] {
            let pieces = split_lines(&bytes, parts);
            assert_eq!(pieces.iter().flat_map(|p| p.1.iter().copied()).collect::<Vec<_>>(), bytes);
            assert!(pieces.iter().all(|p| p.1.ends_with(b"\n")));
            let mut offsets = Vec::new();
            for (before, piece) in pieces {
                let mut landed =
                    bronze::land_bytes(&usage_events::SOURCE, piece, "kafka:t/0", &meta).unwrap();
                shift_lines(&mut landed, 1000 - 1 + before).unwrap();
                for b in &landed.batches {
                    let ids = cast(b.column_by_name("event_id").unwrap(), &DataType::Utf8).unwrap();
                    let lines = b.column_by_name(SOURCE_LINE).unwrap().as_primitive::<Int64Type>().clone();
                    for i in 0..b.num_rows() {
                        offsets.push((ids.as_string::<i32>().value(i).to_string(), lines.value(i)));
                    }
                }
            }
            let expected: Vec<(String, i64)> =
                (0..50).filter(|i| i % 7 != 3).map(|i| (format!("e{i}"), 1000 + i as i64)).collect();
            assert_eq!(offsets, expected, "{parts} parts");
        }
    }
}
