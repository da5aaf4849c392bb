//! The in-memory series store the evaluator reads.
//!
//! Label sets are interned once per series; samples are `(timestamp_ms, value)` pairs in a
//! ring buffer per series, appended in time order and dropped from the front as they age
//! out of the retention window (the longest range any loaded rule needs plus lookback).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

/// Label name that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Labels dropped together with the metric name.
fn is_name_label(n: &str) -> bool {
    n == METRIC_NAME || n == "__type__" || n == "__unit__"
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the staleness marker (and not an ordinary NaN).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A sorted, deduplicated label set, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Labels(Arc<[(String, String)]>);

impl Labels {
    /// Builds a label set; later duplicates of a name win, empty values are dropped
    /// (in Prometheus an empty label value means the label is absent).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut v: Vec<(String, String)> = pairs.into_iter().collect();
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v.retain(|(_, val)| !val.is_empty());
        Labels(v.into())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// All pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// A copy without the metric name, and without the `__type__` and `__unit__` labels
    /// that describe it (Prometheus 3's type-and-unit labels go with the name).
    pub fn without_name(&self) -> Labels {
        if !self.0.iter().any(|(n, _)| is_name_label(n)) {
            return self.clone();
        }
        Labels(
            self.0
                .iter()
                .filter(|(n, _)| !is_name_label(n))
                .cloned()
                .collect(),
        )
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        Labels::new(
            self.0
                .iter()
                .cloned()
                .chain(std::iter::once((name.to_string(), value.to_string()))),
        )
    }

    /// A copy keeping only the pairs for which `keep` is true.
    pub fn filter(&self, mut keep: impl FnMut(&str) -> bool) -> Labels {
        Labels(self.0.iter().filter(|(n, _)| keep(n)).cloned().collect())
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.get(METRIC_NAME);
        if let Some(n) = name {
            f.write_str(n)?;
        }
        let rest: Vec<_> = self.iter().filter(|(n, _)| *n != METRIC_NAME).collect();
        if rest.is_empty() && name.is_some() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, (n, v)) in rest.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One stored series.
#[derive(Debug)]
pub struct StoredSeries {
    /// Labels including `__name__`.
    pub labels: Labels,
    /// Samples in increasing timestamp order.
    pub samples: VecDeque<(i64, f64)>,
}

/// What an append did, so callers can count rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored.
    Appended,
    /// Same timestamp as the newest sample: the value was replaced.
    Replaced,
    /// Older than the newest sample of its series, or than the retention window.
    OutOfOrder,
}

/// Series for one tenant, bounded in time by `retention_ms`.
#[derive(Debug, Default)]
pub struct SeriesStore {
    slots: Vec<Option<StoredSeries>>,
    free: Vec<usize>,
    by_labels: HashMap<Labels, usize>,
    by_name: HashMap<String, Vec<usize>>,
    retention_ms: i64,
    newest_ms: i64,
}

impl SeriesStore {
    /// A store that keeps samples for `retention_ms` behind the newest sample seen.
    pub fn new(retention_ms: i64) -> Self {
        SeriesStore {
            retention_ms,
            ..Default::default()
        }
    }

    /// How far back samples are kept, in milliseconds.
    pub fn retention_ms(&self) -> i64 {
        self.retention_ms
    }

    /// Changes the retention window; takes effect at the next prune.
    pub fn set_retention_ms(&mut self, retention_ms: i64) {
        self.retention_ms = retention_ms;
    }

    /// Appends one sample. `labels` must include `__name__`.
    pub fn append(&mut self, labels: &Labels, ts_ms: i64, value: f64) -> AppendOutcome {
        if ts_ms < self.newest_ms - self.retention_ms {
            return AppendOutcome::OutOfOrder;
        }
        let id = match self.by_labels.get(labels) {
            Some(id) => *id,
            None => self.insert_series(labels.clone()),
        };
        let series = self.slots[id]
            .as_mut()
            .expect("indexed slot holds a series");
        let outcome = match series.samples.back_mut() {
            Some(last) if last.0 == ts_ms => {
                last.1 = value;
                AppendOutcome::Replaced
            }
            Some(last) if last.0 > ts_ms => AppendOutcome::OutOfOrder,
            _ => {
                series.samples.push_back((ts_ms, value));
                AppendOutcome::Appended
            }
        };
        self.newest_ms = self.newest_ms.max(ts_ms);
        outcome
    }

    fn insert_series(&mut self, labels: Labels) -> usize {
        let name = labels.get(METRIC_NAME).unwrap_or_default().to_string();
        let series = StoredSeries {
            labels: labels.clone(),
            samples: VecDeque::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(series);
                id
            }
            None => {
                self.slots.push(Some(series));
                self.slots.len() - 1
            }
        };
        self.by_labels.insert(labels, id);
        self.by_name.entry(name).or_default().push(id);
        id
    }

    /// Drops samples older than the retention window behind `now_ms`, and series left
    /// without samples.
    pub fn prune(&mut self, now_ms: i64) {
        let cutoff = now_ms - self.retention_ms;
        for id in 0..self.slots.len() {
            let Some(series) = self.slots[id].as_mut() else {
                continue;
            };
            while series.samples.front().is_some_and(|s| s.0 < cutoff) {
                series.samples.pop_front();
            }
            if series.samples.is_empty() {
                let series = self.slots[id].take().expect("checked above");
                self.by_labels.remove(&series.labels);
                let name = series.labels.get(METRIC_NAME).unwrap_or_default();
                if let Some(ids) = self.by_name.get_mut(name) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_name.remove(name);
                    }
                }
                self.free.push(id);
            }
        }
    }

    /// Series whose metric name is `name`, or all series when `name` is `None`.
    pub fn series_named<'a>(
        &'a self,
        name: Option<&str>,
    ) -> Box<dyn Iterator<Item = &'a StoredSeries> + 'a> {
        match name {
            Some(n) => Box::new(
                self.by_name
                    .get(n)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.slots[*id].as_ref()),
            ),
            None => Box::new(self.slots.iter().flatten()),
        }
    }

    /// Number of live series.
    pub fn series_count(&self) -> usize {
        self.by_labels.len()
    }

    /// Number of stored samples across all series.
    pub fn sample_count(&self) -> usize {
        self.slots.iter().flatten().map(|s| s.samples.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())))
    }

    #[test]
    fn labels_are_sorted_and_empty_values_dropped() {
        let labels = l(&[("b", "2"), ("a", "1"), ("c", ""), ("__name__", "up")]);
        assert_eq!(labels.to_string(), r#"up{a="1", b="2"}"#);
        assert_eq!(labels.get("c"), None);
    }

    #[test]
    fn appends_in_order_and_prunes_old_samples() {
        let mut store = SeriesStore::new(1_000);
        let up = l(&[("__name__", "up")]);
        assert_eq!(store.append(&up, 100, 1.0), AppendOutcome::Appended);
        assert_eq!(store.append(&up, 50, 1.0), AppendOutcome::OutOfOrder);
        assert_eq!(store.append(&up, 100, 2.0), AppendOutcome::Replaced);
        store.append(&up, 2_000, 3.0);
        store.prune(2_000);
        let samples: Vec<_> = store
            .series_named(Some("up"))
            .next()
            .unwrap()
            .samples
            .clone()
            .into();
        assert_eq!(samples, vec![(2_000, 3.0)]);
        store.prune(10_000);
        assert_eq!(store.series_count(), 0);
        assert_eq!(store.series_named(Some("up")).count(), 0);
    }
}
