//! Where batches wait for the ingest service: a directory of one file per batch, so that
//! an outage, an agent restart or a `SIGKILL` loses nothing already collected.
//!
//! Every batch is written here first (to a temporary file, synced, then renamed, so a
//! crash leaves either the whole batch or none of it) and removed once the ingest
//! acknowledged it. Files are named by a counter that only grows, which is the sending
//! order. Above `max_bytes` the oldest batches are deleted and counted as dropped.

use std::collections::VecDeque;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use foresight_proto::v1::TelemetryBatch;
use prost::Message as _;

/// Spool errors: the directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    /// The file or directory.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

fn err(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError {
        path: path.display().to_string(),
        source,
    }
}

const SUFFIX: &str = ".batch";

/// A bounded, ordered, durable queue of batches in a directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    next: u64,
    /// (counter, size in bytes), oldest first.
    files: VecDeque<(u64, u64)>,
    total: u64,
    dropped: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, picking up batches a previous
    /// run left and removing half-written ones.
    ///
    /// # Errors
    /// [`SpoolError`] when the directory cannot be created or read.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| err(dir, e))? {
            let entry = entry.map_err(|e| err(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write that never completed: the batch is still in memory nowhere,
                // but it was never acknowledged to anyone either.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = name
                .strip_suffix(SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let size = entry.metadata().map_err(|e| err(&entry.path(), e))?.len();
            files.push((id, size));
        }
        files.sort_unstable();
        let next = files.last().map_or(0, |(id, _)| id + 1);
        let total = files.iter().map(|(_, s)| s).sum();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            next,
            files: files.into(),
            total,
            dropped: 0,
        };
        spool.evict();
        Ok(spool)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SUFFIX}"))
    }

    /// Writes `batch` durably at the end of the queue, then drops the oldest batches
    /// while the spool is over its bound.
    ///
    /// # Errors
    /// [`SpoolError`] when the file cannot be written; the queue is unchanged.
    pub fn push(&mut self, batch: &TelemetryBatch) -> Result<(), SpoolError> {
        let bytes = batch.encode_to_vec();
        let id = self.next;
        let path = self.path(id);
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename itself must reach the disk before the batch counts as kept.
            fs::File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(err(&path, e));
        }
        self.next += 1;
        self.files.push_back((id, bytes.len() as u64));
        self.total += bytes.len() as u64;
        self.evict();
        Ok(())
    }

    fn evict(&mut self) {
        // The newest batch always stays, even if it alone is over the bound.
        while self.total > self.max_bytes && self.files.len() > 1 {
            self.remove_front();
            self.dropped += 1;
        }
    }

    fn remove_front(&mut self) {
        if let Some((id, size)) = self.files.pop_front() {
            let _ = fs::remove_file(self.path(id));
            self.total -= size;
        }
    }

    /// The oldest batch. A file that no longer decodes is deleted, counted as dropped,
    /// and the next one is read.
    pub fn front(&mut self) -> Option<TelemetryBatch> {
        while let Some((id, _)) = self.files.front().copied() {
            let path = self.path(id);
            match fs::read(&path)
                .ok()
                .and_then(|b| TelemetryBatch::decode(b.as_slice()).ok())
            {
                Some(batch) => return Some(batch),
                None => {
                    tracing::warn!(path = %path.display(), "Unreadable spooled batch; dropped.");
                    self.remove_front();
                    self.dropped += 1;
                }
            }
        }
        None
    }

    /// Removes the oldest batch, once the ingest has it.
    pub fn pop_front(&mut self) {
        self.remove_front();
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Batches deleted unsent since this spool was opened: over the bound, unreadable,
    /// or rejected by the ingest.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Counts a batch the ingest refused for good.
    pub fn count_dropped(&mut self) {
        self.dropped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64, filler: usize) -> TelemetryBatch {
        TelemetryBatch {
            sequence: seq,
            series: vec![foresight_proto::v1::Series {
                name: "x".repeat(filler),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn keeps_order_across_reopen_and_drops_oldest_over_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 10_000).unwrap();
        for seq in 1..=5 {
            spool.push(&batch(seq, 100)).unwrap();
        }
        drop(spool);
        // A half-written file from a crash is ignored and removed.
        fs::write(dir.path().join("00000000000000000099.tmp"), b"partial").unwrap();
        let mut spool = Spool::open(dir.path(), 10_000).unwrap();
        assert_eq!(spool.len(), 5);
        assert!(!dir.path().join("00000000000000000099.tmp").exists());
        spool.push(&batch(6, 100)).unwrap();
        let mut seen = Vec::new();
        while let Some(b) = spool.front() {
            seen.push(b.sequence);
            spool.pop_front();
        }
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);

        let mut small = Spool::open(dir.path(), 350).unwrap();
        for seq in 1..=5 {
            small.push(&batch(seq, 100)).unwrap();
        }
        assert_eq!(small.len(), 3);
        assert_eq!(small.dropped(), 2);
        assert_eq!(small.front().unwrap().sequence, 3);
    }

    #[test]
    fn an_unreadable_file_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 10_000).unwrap();
        spool.push(&batch(1, 10)).unwrap();
        spool.push(&batch(2, 10)).unwrap();
        fs::write(spool.path(0), [0xff, 0xff, 0xff]).unwrap();
        assert_eq!(spool.front().unwrap().sequence, 2);
        assert_eq!(spool.dropped(), 1);
    }
}
