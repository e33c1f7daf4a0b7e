//! The files source: new `*.jsonl` / `*.json` files in `<landing>/usage_events_stream/`, each
//! processed once, in name order.
//!
//! A file still being written must not be read early. A file is *ready* when it was last modified
//! more than `settle` ago, or when its size did not change between two listings at least 200 ms
//! apart and it ends with a newline (a writer stopped at a record boundary). Hidden files (`.x`)
//! and other extensions (`.tmp`, `.part`) are never read, so writers that rename when done are
//! picked up at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::bronze::{self, usage_events};
use crate::landing::{IngestMeta, Landed};
use crate::{Error, Result};

use super::checkpoint::Input;

/// Follows the event folder of a landing folder.
#[derive(Debug)]
pub struct FileSource {
    landing: PathBuf,
    dir: PathBuf,
    settle: Duration,
    processed: HashSet<String>,
    sizes: HashMap<String, (u64, Instant)>,
    /// The last plan left ready files out (the stream is behind: a backlog).
    behind: bool,
}

/// A listing: the ready files (name, bytes) not processed yet, and how many are still settling.
#[derive(Debug, Default)]
pub struct Listing {
    /// Ready files, in name order.
    pub ready: Vec<(String, u64)>,
    /// Files seen but not ready yet.
    pub pending: usize,
}

impl FileSource {
    /// The source over `landing`; `processed` are the files committed batches already read.
    pub fn new(landing: &Path, settle: Duration, processed: HashSet<String>) -> Result<Self> {
        let dir = landing.join(usage_events::LANDING_DIR);
        if !dir.is_dir() {
            return Err(Error::LandingMissing { path: dir, source_name: "usage_events".into() });
        }
        Ok(FileSource {
            landing: landing.to_path_buf(),
            dir,
            settle,
            processed,
            sizes: HashMap::new(),
            behind: false,
        })
    }

    /// The name a file has in lineage and checkpoints (relative to the landing folder).
    fn name(&self, path: &Path) -> String {
        path.strip_prefix(&self.landing).unwrap_or(path).to_string_lossy().replace('\\', "/")
    }

    /// Lists new files and sorts them into ready and pending.
    pub fn list(&mut self) -> Result<Listing> {
        let now = Instant::now();
        let mut listing = Listing::default();
        let mut seen = HashSet::new();
        for path in bronze::discover_events(&self.dir)? {
            let name = self.name(&path);
            if self.processed.contains(&name) {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            let size = meta.len();
            let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok());
            seen.insert(name.clone());
            let settled = age.is_some_and(|a| a >= self.settle);
            let stable = match self.sizes.get(&name) {
                Some((s, at)) if *s == size => now.duration_since(*at) >= Duration::from_millis(200),
                _ => {
                    self.sizes.insert(name.clone(), (size, now));
                    false
                }
            };
            if settled || (stable && size > 0 && ends_with_newline(&path)?) {
                listing.ready.push((name, size));
            } else {
                listing.pending += 1;
            }
        }
        self.sizes.retain(|n, _| seen.contains(n));
        Ok(listing)
    }

    /// Bytes of the event files (ready or not) that committed batches have not read, and of
    /// those they have.
    pub fn sizes(&self) -> Result<(u64, u64)> {
        let (mut unread, mut read) = (0, 0);
        for path in bronze::discover_events(&self.dir)? {
            let size = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            if self.processed.contains(&self.name(&path)) {
                read += size;
            } else {
                unread += size;
            }
        }
        Ok((unread, read))
    }

    /// The next batch: ready files in name order up to `max_bytes` (at least one file).
    pub fn plan(&mut self, max_bytes: u64) -> Result<(Input, usize)> {
        let listing = self.list()?;
        let mut files = Vec::new();
        let mut bytes = 0u64;
        self.behind = false;
        for (name, size) in listing.ready {
            if !files.is_empty() && bytes + size > max_bytes {
                self.behind = true;
                break;
            }
            bytes += size;
            files.push(name);
        }
        Ok((Input::Files(files), listing.pending))
    }

    /// True when the last plan left ready files for later batches.
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// Reads a batch's files (in parallel) into typed rows and rejects.
    pub fn read(&self, files: &[String], meta: &IngestMeta) -> Result<Landed> {
        let paths: Vec<PathBuf> = files.iter().map(|f| self.landing.join(f)).collect();
        bronze::read_files(&self.landing, &usage_events::SOURCE, &paths, meta)
    }

    /// Marks a batch's files processed.
    pub fn done(&mut self, files: &[String]) {
        for f in files {
            self.sizes.remove(f);
            self.processed.insert(f.clone());
        }
    }
}

fn ends_with_newline(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if f.seek(SeekFrom::End(-1)).is_err() {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    f.read_exact(&mut last).map_err(|e| Error::io(path, e))?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_being_written_is_not_read_until_it_is_stable_and_complete() {
        let landing = tempfile::tempdir().unwrap();
        let dir = landing.path().join(usage_events::LANDING_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.jsonl"), "{\"event_id\": \"1\"}\n{\"event_id\": ").unwrap();
        std::fs::write(dir.join(".hidden.jsonl"), "{}\n").unwrap();
        std::fs::write(dir.join("b.jsonl.tmp"), "{}\n").unwrap();
        let mut src = FileSource::new(landing.path(), Duration::from_secs(60), HashSet::new()).unwrap();
        let l = src.list().unwrap();
        assert!(l.ready.is_empty() && l.pending == 1, "{l:?}");
        std::thread::sleep(Duration::from_millis(250));
        assert!(src.list().unwrap().ready.is_empty(), "stable but cut mid-record");
        std::fs::write(dir.join("a.jsonl"), "{\"event_id\": \"1\"}\n{\"event_id\": \"2\"}\n").unwrap();
        assert!(src.list().unwrap().ready.is_empty(), "size changed: wait one more listing");
        std::thread::sleep(Duration::from_millis(250));
        let l = src.list().unwrap();
        assert_eq!(
            l.ready.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            vec!["usage_events_stream/a.jsonl"]
        );
        src.done(&["usage_events_stream/a.jsonl".to_string()]);
        assert!(src.list().unwrap().ready.is_empty(), "processed once");
        // A settled file is ready at once, complete or not.
        let mut quick = FileSource::new(landing.path(), Duration::ZERO, HashSet::new()).unwrap();
        assert_eq!(quick.plan(1).unwrap().0, Input::Files(vec!["usage_events_stream/a.jsonl".into()]));
    }
}
