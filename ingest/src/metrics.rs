//! The service's own metrics, served at `/metrics` in Prometheus' text format: what was
//! accepted and refused (by reason), and the outbox's state at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the request handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    batches_accepted: AtomicU64,
    batches_duplicate: AtomicU64,
    series_accepted: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts a stored batch of `series` series (`duplicate`: stored before).
    pub fn accepted(&self, series: usize, duplicate: bool) {
        if duplicate {
            self.batches_duplicate.fetch_add(1, Ordering::Relaxed);
        } else {
            self.batches_accepted.fetch_add(1, Ordering::Relaxed);
            self.series_accepted
                .fetch_add(series as u64, Ordering::Relaxed);
        }
    }

    /// Counts a refused request by its error code.
    pub fn rejected(&self, code: &'static str) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    /// The text format, with `gauges` (name, help, value) read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        };
        counter(
            "foresight_batches_accepted_total",
            "Telemetry batches stored and handed to the evaluator.",
            self.batches_accepted.load(Ordering::Relaxed),
        );
        counter(
            "foresight_batches_duplicate_total",
            "Retried batches acknowledged without storing them again.",
            self.batches_duplicate.load(Ordering::Relaxed),
        );
        counter(
            "foresight_series_accepted_total",
            "Series in accepted batches.",
            self.series_accepted.load(Ordering::Relaxed),
        );
        out.push_str("# HELP foresight_requests_rejected_total Requests refused, by reason.\n");
        out.push_str("# TYPE foresight_requests_rejected_total counter\n");
        if let Ok(m) = self.rejected.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "foresight_requests_rejected_total{{reason=\"{code}\"}} {n}"
                );
            }
        }
        for (name, help, v) in gauges {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            );
        }
        out
    }
}
