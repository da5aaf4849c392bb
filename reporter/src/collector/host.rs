//! Host facts from the machine the agent runs on: the broker's log dirs.

use std::path::Path;

/// One log dir's state.
#[derive(Debug, Clone, PartialEq)]
pub struct LogDir {
    /// The path as configured.
    pub path: String,
    /// Bytes available to the broker's (unprivileged) user, if the file system answered.
    pub free_bytes: Option<u64>,
    /// Size of the file system, if it answered.
    pub total_bytes: Option<u64>,
    /// Whether the directory can be listed: a broker marks a dir offline on I/O errors,
    /// and an unreadable dir is the host-side view of that.
    pub readable: bool,
}

/// Reads each of `dirs`; never fails, a dir that cannot be read says so.
pub fn log_dirs(dirs: &[impl AsRef<Path>]) -> Vec<LogDir> {
    dirs.iter()
        .map(|d| {
            let d = d.as_ref();
            let stat = rustix::fs::statvfs(d).ok();
            LogDir {
                path: d.display().to_string(),
                free_bytes: stat.as_ref().map(|s| s.f_bavail.saturating_mul(s.f_frsize)),
                total_bytes: stat.as_ref().map(|s| s.f_blocks.saturating_mul(s.f_frsize)),
                readable: std::fs::read_dir(d).is_ok(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_directory_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let got = log_dirs(&[dir.path(), missing.as_path()]);
        assert!(got[0].readable);
        let (free, total) = (got[0].free_bytes.unwrap(), got[0].total_bytes.unwrap());
        assert!(total > 0 && free <= total, "{free} of {total}");
        assert!(!got[1].readable);
        assert_eq!(got[1].free_bytes, None);
    }
}
