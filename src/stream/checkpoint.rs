//! A stream's checkpoint folder, `<lake>/_checkpoints/<stream>/` (SPEC section 3).
//!
//! ```text
//! offsets/<N>.json   batch N's plan: its input (files, or Kafka ranges), ingest id, watermark
//!                    state; written (atomically) before bronze commits batch N
//! silver/<N>         written once silver and quarantine applied batch N
//! commits/<N>        written once every table downstream of bronze applied batch N (the
//!                    daily table and gold too, which may take several batches in one step)
//! ```
//!
//! The commit point of batch N is bronze's Delta commit, which records the Delta application
//! transaction `(app_id, N)`: the plan of the last batch bronze recorded is the stream's position
//! and state. A plan above it never committed and is discarded (its input is planned again). A
//! batch without its `commits/` marker is finished on restart, each table skipping it if its own
//! transaction record shows it applied. Offsets and state thereby commit with the Delta commit.
//!
//! While a backlog is read, the daily table and gold are brought up to date once for several
//! batches (see [`super::StreamConfig::gold_lag`]): those batches have their `silver/` marker
//! and wait for their `commits/` one. On restart the batches without it (the
//! [`Checkpoint::uncommitted_tail`]) get their gold step from their silver rows.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lake::Lake;
use crate::{Error, Result};

/// The input of one micro-batch: exactly what it reads, so a replay reads the same records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    /// Landing files, relative to the landing folder, in reading order.
    Files(Vec<String>),
    /// Kafka offsets: per partition, `[start, end)`.
    Kafka {
        /// Topic.
        topic: String,
        /// `(partition, start, end)`.
        ranges: Vec<(i32, i64, i64)>,
    },
}

impl Input {
    /// True when the batch would read nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            Input::Files(f) => f.is_empty(),
            Input::Kafka { ranges, .. } => ranges.iter().all(|(_, s, e)| e <= s),
        }
    }
}

/// Batch N's plan and the state after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    /// Batch number (1, 2, ...): the Delta application transaction version.
    pub batch: i64,
    /// The ingest id stamped on the batch's rows (`run_id` in bronze, `ingest_run_id` in silver).
    pub run_id: String,
    /// Ingest instant of the batch's rows, microseconds since the epoch.
    pub ingest_ts_micros: i64,
    /// What the batch reads.
    pub input: Input,
    /// Watermark the batch was processed with (event time, microseconds), if any.
    pub watermark_micros: Option<i64>,
    /// Largest plausible event time seen up to and including this batch.
    pub max_event_micros: Option<i64>,
    /// A backfill batch: bronze (and landing rejects) only, silver and gold rebuilt later.
    #[serde(default)]
    pub bronze_only: bool,
}

/// A stream's checkpoint folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
}

impl Checkpoint {
    /// The checkpoint of stream `name` in `lake` (folders are created).
    pub fn open(lake: &Lake, name: &str) -> Result<Self> {
        let dir = lake.state_dir().join("_checkpoints").join(name);
        for sub in ["offsets", "commits", "silver"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        Ok(Checkpoint { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn offsets(&self, batch: i64) -> PathBuf {
        self.dir.join("offsets").join(format!("{batch:010}.json"))
    }

    fn commit_marker(&self, batch: i64) -> PathBuf {
        self.dir.join("commits").join(format!("{batch:010}"))
    }

    /// Writes batch N's plan atomically (temporary file, fsync, rename).
    pub fn write_planned(&self, planned: &Planned) -> Result<()> {
        write_atomically(&self.offsets(planned.batch), &serde_json::to_vec_pretty(planned)?)
    }

    /// Reads batch N's plan.
    pub fn planned(&self, batch: i64) -> Result<Planned> {
        let path = self.offsets(batch);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("checkpoint {} is not a batch plan: {e}", path.display())))
    }

    /// Every committed plan, batches 1..=`last`, in order (a files stream's processed files are
    /// the union of theirs).
    pub fn planned_upto(&self, last: i64) -> Result<Vec<Planned>> {
        (1..=last).map(|n| self.planned(n)).collect()
    }

    fn silver_marker(&self, batch: i64) -> PathBuf {
        self.dir.join("silver").join(format!("{batch:010}"))
    }

    /// Removes plans and markers above `last` (batches that never committed).
    pub fn discard_after(&self, last: i64) -> Result<()> {
        for sub in ["offsets", "commits", "silver"] {
            let dir = self.dir.join(sub);
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let path = entry.map_err(|e| Error::io(&dir, e))?.path();
                let n = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<i64>().ok());
                if n.is_some_and(|n| n > last) {
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        Ok(())
    }

    /// True when every table downstream of bronze applied batch N.
    pub fn committed(&self, batch: i64) -> bool {
        self.commit_marker(batch).is_file()
    }

    /// Records that every table downstream of bronze applied batch N (and that it is the
    /// stream's latest, in `latest`, which readers such as the API watch for new data).
    pub fn mark_committed(&self, batch: i64) -> Result<()> {
        self.mark_committed_range(batch, batch)
    }

    /// [`Checkpoint::mark_committed`] for batches `first..=last` (one gold step's batches).
    pub fn mark_committed_range(&self, first: i64, last: i64) -> Result<()> {
        for batch in first..=last {
            write_atomically(&self.commit_marker(batch), b"")?;
        }
        write_atomically(&self.dir.join("latest"), last.to_string().as_bytes())
    }

    /// True when silver and quarantine applied batch N.
    pub fn silver_done(&self, batch: i64) -> bool {
        self.silver_marker(batch).is_file() || self.committed(batch)
    }

    /// Records that silver and quarantine applied batch N (its gold step may wait).
    pub fn mark_silver(&self, batch: i64) -> Result<()> {
        write_atomically(&self.silver_marker(batch), b"")
    }

    /// The stream batches up to `last` still waiting for their gold step, oldest first: the run
    /// of batches without a `commits/` marker that ends at `last` (backfill batches wait for a
    /// rebuild instead and end the run).
    pub fn uncommitted_tail(&self, last: i64) -> Result<Vec<Planned>> {
        let mut tail = Vec::new();
        for batch in (1..=last).rev() {
            if self.committed(batch) {
                break;
            }
            let plan = self.planned(batch)?;
            if plan.bronze_only {
                break;
            }
            tail.push(plan);
        }
        tail.reverse();
        Ok(tail)
    }

    /// Records that a rebuild covered every batch up to `last`: each backfill batch is marked
    /// committed (an interrupted stream batch is not: its recovery still writes its landing
    /// rejects).
    pub fn mark_rebuilt(&self, last: i64) -> Result<()> {
        let mut marked = false;
        for batch in 1..=last {
            if !self.committed(batch) && self.planned(batch).is_ok_and(|p| p.bronze_only) {
                write_atomically(&self.commit_marker(batch), b"")?;
                marked = true;
            }
        }
        if marked {
            write_atomically(&self.dir.join("latest"), last.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// The lake-wide mark (beside every stream's folder) that silver and gold must be rebuilt from
/// bronze before anything else: a backfill landed batches in bronze only, or a rebuild (several
/// commits) was interrupted.
fn rebuild_marker(lake: &Lake) -> PathBuf {
    lake.state_dir().join("_checkpoints").join("rebuild-pending")
}

/// True when the next stream or run of `lake` must rebuild silver and gold first.
pub fn rebuild_pending(lake: &Lake) -> bool {
    rebuild_marker(lake).is_file()
}

/// Sets the mark, before the first commit it covers, so a crash leaves it set.
pub fn mark_rebuild_pending(lake: &Lake) -> Result<()> {
    let marker = rebuild_marker(lake);
    if let Some(dir) = marker.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomically(&marker, b"")
}

/// Clears the mark, once a rebuild committed.
pub fn clear_rebuild_pending(lake: &Lake) -> Result<()> {
    let marker = rebuild_marker(lake);
    match std::fs::remove_file(&marker) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&marker, e)),
        _ => Ok(()),
    }
}

/// Every stream's latest fully applied batch and when it was applied: `(stream, batch, time)`.
pub fn latest_batches(lake: &Lake) -> Vec<(String, i64, std::time::SystemTime)> {
    let dir = lake.state_dir().join("_checkpoints");
    let Ok(entries) = std::fs::read_dir(&dir) else { return vec![] };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path().join("latest");
            let batch = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
            let at = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), batch, at))
        })
        .collect();
    out.sort();
    out
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The lake's events lock: one process at a time writes the event tables (a stream, or a run).
/// Held until dropped; the OS releases it if the process dies.
#[derive(Debug)]
pub struct EventsLock {
    _file: File,
}

/// Takes the events lock of `lake`, or fails at once naming the holder.
pub fn lock(lake: &Lake) -> Result<EventsLock> {
    let dir = lake.state_dir().join("_checkpoints");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join("usage_events.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            use std::io::{Seek, Write};
            let mut f = &file;
            let _ = f.set_len(0);
            let _ = f.seek(std::io::SeekFrom::Start(0));
            let _ = write!(f, "{}", std::process::id());
            Ok(EventsLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(Error::Busy(format!(
                "another cloudlake process (pid {}) is writing this lake's usage events (a `stream` or a `run`); \
                 stop it or wait for it to finish",
                holder.trim()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch N's plan reading file `fN`.
    fn file_plan(batch: i64, bronze_only: bool) -> Planned {
        Planned {
            batch,
            run_id: format!("r{batch}"),
            ingest_ts_micros: batch,
            input: Input::Files(vec![format!("f{batch}")]),
            watermark_micros: None,
            max_event_micros: None,
            bronze_only,
        }
    }

    #[test]
    fn plans_round_trip_and_uncommitted_ones_are_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let cp = Checkpoint::open(&lake, "s").unwrap();
        for n in 1..=3 {
            let p = Planned {
                batch: n,
                run_id: format!("r{n}"),
                ingest_ts_micros: n,
                input: Input::Kafka { topic: "t".into(), ranges: vec![(0, n * 10, n * 10 + 10)] },
                watermark_micros: None,
                max_event_micros: Some(n),
                bronze_only: false,
            };
            cp.write_planned(&p).unwrap();
            assert_eq!(cp.planned(n).unwrap(), p);
        }
        cp.mark_committed(1).unwrap();
        cp.mark_committed(3).unwrap();
        cp.discard_after(2).unwrap();
        assert!(cp.planned(3).is_err() && !cp.committed(3));
        assert!(cp.committed(1) && !cp.committed(2));
        assert_eq!(cp.planned_upto(2).unwrap().len(), 2);
    }

    #[test]
    fn a_pending_rebuild_is_lake_wide_and_a_rebuild_marks_backfill_batches_committed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let files = Checkpoint::open(&lake, "files").unwrap();
        let kafka = Checkpoint::open(&lake, "kafka").unwrap();
        assert!(!rebuild_pending(&lake));
        mark_rebuild_pending(&lake).unwrap();
        assert!(rebuild_pending(&lake), "one mark for every stream of the lake");
        for batch in 1..=4 {
            files.write_planned(&file_plan(batch, batch != 2)).unwrap();
        }
        files.mark_committed(1).unwrap();
        files.mark_rebuilt(3).unwrap();
        // Backfill batches are done; batch 2, an interrupted stream batch, waits for its recovery.
        assert!(files.committed(1) && files.committed(3));
        assert!(!files.committed(2) && !files.committed(4));
        assert!(!kafka.committed(1));
        clear_rebuild_pending(&lake).unwrap();
        assert!(!rebuild_pending(&lake));
        clear_rebuild_pending(&lake).unwrap(); // nothing pending: a no-op
    }

    #[test]
    fn batches_waiting_for_their_gold_step_are_the_tail_without_commit_markers() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let cp = Checkpoint::open(&lake, "s").unwrap();
        for batch in 1..=6 {
            cp.write_planned(&file_plan(batch, batch == 2)).unwrap();
        }
        assert_eq!(cp.uncommitted_tail(0).unwrap(), vec![]);
        // 3 to 6 wait for gold (a backfill batch, 2, ends the run); 6 lacks silver too.
        let batches = |t: Vec<Planned>| t.iter().map(|p| p.batch).collect::<Vec<_>>();
        assert_eq!(batches(cp.uncommitted_tail(6).unwrap()), vec![3, 4, 5, 6]);
        for batch in 3..=5 {
            cp.mark_silver(batch).unwrap();
        }
        assert!(cp.silver_done(5) && !cp.silver_done(6) && !cp.committed(5));
        cp.mark_committed_range(3, 4).unwrap();
        assert_eq!(batches(cp.uncommitted_tail(6).unwrap()), vec![5, 6]);
        assert_eq!(std::fs::read_to_string(cp.dir().join("latest")).unwrap(), "4");
        cp.mark_committed(6).unwrap();
        assert!(cp.silver_done(6), "a committed batch has its silver");
        assert_eq!(cp.uncommitted_tail(6).unwrap(), vec![]);
        cp.discard_after(4).unwrap();
        assert!(!cp.silver_done(5) && !cp.committed(6));
    }

    #[test]
    fn the_events_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::new(dir.path()).unwrap();
        let held = lock(&lake).unwrap();
        let err = lock(&lake).unwrap_err().to_string();
        assert!(err.contains("another cloudlake process"), "{err}");
        drop(held);
        lock(&lake).unwrap();
    }
}
