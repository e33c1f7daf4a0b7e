//! Table maintenance: compaction of small files and vacuum of files old versions no longer need.
//!
//! Micro-batches and merges leave many small Parquet files; [`maintain`] rewrites each table's
//! small files into larger ones (delta-rs `optimize`, bin-packing, a new table version with the
//! same rows) and then deletes files that no version within the retention period references
//! (`vacuum`). Time travel to versions older than the retention is given up, by design.

use serde::Serialize;

use super::{Lake, qualified};
use crate::{Error, Result};

/// What maintenance did to one table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MaintainMetrics {
    /// `layer/name`.
    pub table: String,
    /// Files written by compaction.
    pub files_added: u64,
    /// Files compacted away (still on disk until vacuumed).
    pub files_removed: u64,
    /// Files deleted by vacuum.
    pub files_vacuumed: u64,
}

/// Compacts one table's small files (Delta OPTIMIZE: same rows, fewer files, no data change);
/// returns how many files it removed and added. A streaming table gets one file per date
/// partition per micro-batch, and reading many small files is what slows the next batches.
pub async fn compact(lake: &Lake, layer: crate::lake::Layer, name: &str) -> Result<(u64, u64)> {
    let Some(table) = lake.open(layer, name).await? else { return Ok((0, 0)) };
    let (_, m) = table.optimize().await.map_err(|e| Error::delta(qualified(layer, name), e))?;
    Ok((m.num_files_removed, m.num_files_added))
}

/// Compacts and vacuums every table of the lake, keeping files younger than `retain_hours`.
pub async fn maintain(lake: &Lake, retain_hours: u64) -> Result<Vec<MaintainMetrics>> {
    let mut out = Vec::new();
    for (layer, name) in lake.tables().await? {
        let Some(table) = lake.open(layer, &name).await? else { continue };
        let q = qualified(layer, &name);
        let (table, optimized) = table.optimize().await.map_err(|e| Error::delta(&q, e))?;
        let retention = i64::try_from(retain_hours)
            .ok()
            .and_then(chrono::TimeDelta::try_hours)
            .ok_or_else(|| Error::Usage(format!("--retain-hours {retain_hours} is too large")))?;
        let (_, vacuumed) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| Error::delta(&q, e))?;
        out.push(MaintainMetrics {
            table: q,
            files_added: optimized.num_files_added,
            files_removed: optimized.num_files_removed,
            files_vacuumed: vacuumed.files_deleted.len() as u64,
        });
    }
    Ok(out)
}
