//! The in-memory series store the evaluator reads.
//!
//! Label names and values are interned per store; samples are compressed per series as
//! they are appended (see [`StoredSeries`]) and dropped as they age out of the retention
//! window (the longest range any loaded rule needs plus lookback).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Label name that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Labels dropped together with the metric name.
fn is_name_label(n: &str) -> bool {
    n == METRIC_NAME || n == "__type__" || n == "__unit__"
}

pub use foresight_proto::STALE_NAN_BITS;

/// Whether `v` is the staleness marker (and not an ordinary NaN).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A sorted, deduplicated label set, cheap to clone. Names and values are shared
/// strings: the store interns them, so a fleet's thousand `topic="payments"` series hold
/// one copy of each.
///
/// The metric name is held apart from the other labels, so that dropping it (which most
/// PromQL functions and operators do to every series they touch) shares the rest instead
/// of copying it.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Labels {
    name: Option<Arc<str>>,
    rest: Arc<[(Arc<str>, Arc<str>)]>,
}

type Pair = (Arc<str>, Arc<str>);

impl Labels {
    /// Builds a label set; later duplicates of a name win, empty values are dropped
    /// (in Prometheus an empty label value means the label is absent).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut v: Vec<(String, String)> = pairs.into_iter().collect();
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        v.retain(|(_, val)| !val.is_empty());
        Self::from_sorted(v.into_iter().map(|(n, v)| (n.into(), v.into())))
    }

    /// From pairs already sorted by name, unique and non-empty.
    fn from_sorted(pairs: impl IntoIterator<Item = Pair>) -> Self {
        let mut name = None;
        let rest = pairs
            .into_iter()
            .filter_map(|(n, v)| {
                if &*n == METRIC_NAME {
                    name = Some(v);
                    None
                } else {
                    Some((n, v))
                }
            })
            .collect();
        Labels { name, rest }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        if name == METRIC_NAME {
            return self.name.as_deref();
        }
        // Label sets are small: a scan comparing lengths first beats a binary search
        // of string comparisons.
        self.rest
            .iter()
            .find(|(n, _)| n.len() == name.len() && **n == *name)
            .map(|(_, v)| &**v)
    }

    /// All pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let split = match self.name {
            Some(_) => self.rest.partition_point(|(n, _)| &**n < METRIC_NAME),
            None => self.rest.len(),
        };
        let (before, after) = self.rest.split_at(split);
        fn pair((n, v): &Pair) -> (&str, &str) {
            (n, v)
        }
        before
            .iter()
            .map(pair)
            .chain(self.name.as_deref().map(|v| (METRIC_NAME, v)))
            .chain(after.iter().map(pair))
    }

    /// All pairs but the metric name, in name order.
    pub fn iter_without_name(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rest.iter().map(|(n, v)| (&**n, &**v))
    }

    fn pairs(&self) -> impl Iterator<Item = Pair> + '_ {
        let split = match self.name {
            Some(_) => self.rest.partition_point(|(n, _)| &**n < METRIC_NAME),
            None => self.rest.len(),
        };
        let (before, after) = self.rest.split_at(split);
        before
            .iter()
            .cloned()
            .chain(self.name.clone().map(|v| (Arc::from(METRIC_NAME), v)))
            .chain(after.iter().cloned())
    }

    /// A copy without the metric name, and without the `__type__` and `__unit__` labels
    /// that describe it (Prometheus 3's type-and-unit labels go with the name).
    pub fn without_name(&self) -> Labels {
        if self.rest.iter().any(|(n, _)| is_name_label(n)) {
            return Labels {
                name: None,
                rest: self
                    .rest
                    .iter()
                    .filter(|(n, _)| !is_name_label(n))
                    .cloned()
                    .collect(),
            };
        }
        Labels {
            name: None,
            rest: self.rest.clone(),
        }
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        if name == METRIC_NAME {
            return Labels {
                name: (!value.is_empty()).then(|| value.into()),
                rest: self.rest.clone(),
            };
        }
        let mut v: Vec<Pair> = self
            .rest
            .iter()
            .filter(|(n, _)| &**n != name)
            .cloned()
            .collect();
        if !value.is_empty() {
            let at = v.partition_point(|(n, _)| &**n < name);
            v.insert(at, (name.into(), value.into()));
        }
        Labels {
            name: self.name.clone(),
            rest: v.into(),
        }
    }

    /// A copy keeping only the pairs for which `keep` is true.
    pub fn filter(&self, mut keep: impl FnMut(&str) -> bool) -> Labels {
        Labels {
            name: self.name.clone().filter(|_| keep(METRIC_NAME)),
            rest: self.rest.iter().filter(|(n, _)| keep(n)).cloned().collect(),
        }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.rest.len() + usize::from(self.name.is_some())
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.iter().cmp(other.iter())
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

/// One stored series: its labels and its samples, compressed.
///
/// Samples are encoded as they arrive, one header byte each in the common case:
/// timestamps as delta-of-delta (a regular scrape costs nothing more), values as
/// "unchanged", as delta-of-delta of integers (offsets and counters), or as the
/// significant bytes of the XOR with the previous value (Gorilla's idea, byte-aligned
/// so that decoding is a few branches per sample). Every [`CHECKPOINT_EVERY`] samples
/// the decoder state is saved, so reading the last minutes of an hour-long series
/// decodes a few dozen samples, not all of them.
#[derive(Debug)]
pub struct StoredSeries {
    /// Labels including `__name__`.
    pub labels: Labels,
    data: Vec<u8>,
    checkpoints: Vec<Checkpoint>,
    /// Encoder state after the newest sample.
    end: State,
    first_t: i64,
    count: u32,
}

/// Samples between saved decoder states.
pub const CHECKPOINT_EVERY: u32 = 16;

/// Largest magnitude encoded as an integer: beyond it f64 no longer holds every integer.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

#[derive(Debug, Clone, Copy, Default)]
struct State {
    t: i64,
    dt: i64,
    v: f64,
    /// Delta between the last two values when both are exact integers, else 0.
    int_delta: i64,
}

/// Where decoding can start: the encoder state before the sample at `offset`. For all
/// but the first checkpoint `state.t` is the previous sample's timestamp, so a search for
/// samples after `t` starts at the last checkpoint with `state.t <= t`.
#[derive(Debug, Clone, Copy)]
struct Checkpoint {
    offset: u32,
    state: State,
}

const KIND_SAME: u8 = 0;
const KIND_INT_STEADY: u8 = 1;
const KIND_INT: u8 = 2;
const KIND_XOR: u8 = 3;
const TS_IRREGULAR: u8 = 0x80;

fn exact_int(v: f64) -> Option<i64> {
    if v.abs() < MAX_EXACT_INT && v.fract() == 0.0 {
        let i = v as i64;
        // -0.0 is integral but would come back as +0.0.
        ((i as f64).to_bits() == v.to_bits()).then_some(i)
    } else {
        None
    }
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> i64 {
    let mut z = 0u64;
    let mut shift = 0;
    while let Some(&b) = data.get(*pos) {
        *pos += 1;
        if shift < 64 {
            z |= u64::from(b & 0x7f) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

impl State {
    fn encode(&mut self, out: &mut Vec<u8>, t: i64, v: f64) {
        let dt = t.wrapping_sub(self.t);
        let dod = dt.wrapping_sub(self.dt);
        let ints = exact_int(self.v).zip(exact_int(v));
        let (kind, int_delta) = if v.to_bits() == self.v.to_bits() {
            (KIND_SAME, 0)
        } else if let Some((p, c)) = ints {
            let d = c.wrapping_sub(p);
            (
                if d == self.int_delta {
                    KIND_INT_STEADY
                } else {
                    KIND_INT
                },
                d,
            )
        } else {
            (KIND_XOR, 0)
        };
        out.push(kind | if dod != 0 { TS_IRREGULAR } else { 0 });
        if dod != 0 {
            put_varint(out, dod);
        }
        match kind {
            KIND_INT => put_varint(out, int_delta.wrapping_sub(self.int_delta)),
            KIND_XOR => {
                let x = v.to_bits() ^ self.v.to_bits();
                let lead = (x.leading_zeros() / 8).min(7);
                let trail = (x.trailing_zeros() / 8).min(7);
                out.push(((lead as u8) << 4) | trail as u8);
                let bytes = x.to_be_bytes();
                out.extend_from_slice(&bytes[lead as usize..8 - trail as usize]);
            }
            _ => {}
        }
        *self = State {
            t,
            dt,
            v,
            int_delta,
        };
    }

    /// Decodes the sample at `pos`; `None` at the end of the data. `iv` shadows the
    /// value as an integer (start it at `v as i64`), keeping float conversions off the
    /// dependency chain of integer runs.
    #[inline]
    fn decode(&mut self, data: &[u8], pos: &mut usize, iv: &mut i64) -> Option<(i64, f64)> {
        let header = *data.get(*pos)?;
        *pos += 1;
        let dod = if header & TS_IRREGULAR != 0 {
            get_varint(data, pos)
        } else {
            0
        };
        let dt = self.dt.wrapping_add(dod);
        let t = self.t.wrapping_add(dt);
        let (v, int_delta) = match header & 0x03 {
            KIND_SAME => (self.v, 0),
            KIND_INT_STEADY | KIND_INT => {
                let d = if header & 0x03 == KIND_INT {
                    self.int_delta.wrapping_add(get_varint(data, pos))
                } else {
                    self.int_delta
                };
                // The encoder chose an integer kind: the previous value is one.
                *iv = iv.wrapping_add(d);
                (*iv as f64, d)
            }
            _ => {
                let b = *data.get(*pos)?;
                *pos += 1;
                let lead = usize::from(b >> 4).min(7);
                let trail = usize::from(b & 0x0f).min(7);
                let n = 8usize.saturating_sub(lead + trail);
                let mut bytes = [0u8; 8];
                let src = data.get(*pos..*pos + n)?;
                bytes[lead..lead + n].copy_from_slice(src);
                *pos += n;
                let v = f64::from_bits(self.v.to_bits() ^ u64::from_be_bytes(bytes));
                *iv = v as i64;
                (v, 0)
            }
        };
        *self = State {
            t,
            dt,
            v,
            int_delta,
        };
        Some((t, v))
    }
}

impl StoredSeries {
    fn new(labels: Labels) -> Self {
        StoredSeries {
            labels,
            data: Vec::new(),
            checkpoints: Vec::new(),
            end: State::default(),
            first_t: 0,
            count: 0,
        }
    }

    fn push(&mut self, t: i64, v: f64) {
        if self.count == 0 {
            self.first_t = t;
        }
        if self.count.is_multiple_of(CHECKPOINT_EVERY) {
            self.checkpoints.push(Checkpoint {
                offset: self.data.len() as u32,
                state: self.end,
            });
        }
        self.end.encode(&mut self.data, t, v);
        self.count += 1;
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the series holds no sample.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The newest sample.
    pub fn last(&self) -> Option<(i64, f64)> {
        (self.count > 0).then_some((self.end.t, self.end.v))
    }

    /// The last checkpoint from which every sample after `after` is decoded.
    fn checkpoint_for(&self, after: i64) -> Option<(usize, &Checkpoint)> {
        let rest = self.checkpoints.get(1..)?;
        let idx = rest.partition_point(|c| c.state.t <= after);
        self.checkpoints.get(idx).map(|c| (idx, c))
    }

    /// Decodes, in time order, the samples with `after < t <= until` into `out`.
    pub fn range_into(&self, after: i64, until: i64, out: &mut Vec<(i64, f64)>) {
        if self.count == 0 || self.end.t <= after || self.first_t > until {
            return;
        }
        let Some((_, cp)) = self.checkpoint_for(after) else {
            return;
        };
        let mut state = cp.state;
        let mut pos = cp.offset as usize;
        let mut iv = state.v as i64;
        while let Some((t, v)) = state.decode(&self.data, &mut pos, &mut iv) {
            if t > until {
                break;
            }
            if t > after {
                out.push((t, v));
            }
        }
    }

    /// The newest sample at or before `t`.
    pub fn at_or_before(&self, t: i64) -> Option<(i64, f64)> {
        if self.count == 0 || self.first_t > t {
            return None;
        }
        if self.end.t <= t {
            return self.last();
        }
        let (idx, cp) = self.checkpoint_for(t)?;
        let mut state = cp.state;
        let mut pos = cp.offset as usize;
        let mut iv = state.v as i64;
        // Past the first checkpoint, the state holds the sample before it.
        let mut found = (idx > 0).then_some((state.t, state.v));
        while let Some((st, v)) = state.decode(&self.data, &mut pos, &mut iv) {
            if st > t {
                break;
            }
            found = Some((st, v));
        }
        found
    }

    /// Every sample, in time order.
    pub fn samples(&self) -> Vec<(i64, f64)> {
        let mut out = Vec::with_capacity(self.len());
        self.range_into(i64::MIN, i64::MAX, &mut out);
        out
    }

    /// Re-encodes from `samples`, dropping the old encoding.
    fn rebuild(&mut self, samples: &[(i64, f64)]) {
        self.data = Vec::with_capacity(samples.len() * 2);
        self.checkpoints = Vec::new();
        self.end = State::default();
        self.count = 0;
        for (t, v) in samples {
            self.push(*t, *v);
        }
        self.data.shrink_to_fit();
        self.checkpoints.shrink_to_fit();
    }

    /// Heap bytes held by the samples, for sizing.
    pub fn sample_bytes(&self) -> usize {
        self.data.capacity() + self.checkpoints.capacity() * std::mem::size_of::<Checkpoint>()
    }
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

/// Hashing for maps keyed by tenant-supplied labels: fast, and seeded per process.
type Fast = foldhash::fast::RandomState;

/// Series ids by a hash of some of their labels.
pub type KeyedIds = HashMap<u64, Vec<u32>, Fast>;

/// Series for one tenant, bounded in time by `retention_ms`.
#[derive(Debug, Default)]
pub struct SeriesStore {
    slots: Vec<Option<StoredSeries>>,
    free: Vec<usize>,
    by_labels: HashMap<Labels, usize, Fast>,
    by_name: HashMap<Arc<str>, Vec<usize>, Fast>,
    strings: HashSet<Arc<str>, Fast>,
    /// Bumped whenever a series is added or removed: cached indexes older than it are
    /// rebuilt.
    generation: u64,
    /// Series ids of one metric by the hash of some of their label values, built on
    /// first use and kept while the series set stays the same (see [`Self::indexed`]).
    indexes: std::sync::Mutex<HashMap<String, (u64, Arc<KeyedIds>), Fast>>,
    key_state: Fast,
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
            None => self.insert_series(labels),
        };
        let series = self.slots[id]
            .as_mut()
            .expect("indexed slot holds a series");
        let outcome = match series.last() {
            Some((last_t, _)) if last_t == ts_ms => {
                // Rare (a re-sent sample): re-encode with the new value.
                let mut all = series.samples();
                if let Some(last) = all.last_mut() {
                    last.1 = value;
                }
                series.rebuild(&all);
                AppendOutcome::Replaced
            }
            Some((last_t, _)) if last_t > ts_ms => AppendOutcome::OutOfOrder,
            _ => {
                series.push(ts_ms, value);
                AppendOutcome::Appended
            }
        };
        self.newest_ms = self.newest_ms.max(ts_ms);
        outcome
    }

    fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.strings.get(s) {
            Some(shared) => shared.clone(),
            None => {
                self.strings.insert(s.clone());
                s.clone()
            }
        }
    }

    fn insert_series(&mut self, labels: &Labels) -> usize {
        let pairs: Vec<Pair> = labels
            .pairs()
            .map(|(n, v)| (self.intern(&n), self.intern(&v)))
            .collect();
        let labels = Labels::from_sorted(pairs);
        let name = labels.name.clone().unwrap_or_else(|| Arc::from(""));
        let series = StoredSeries::new(labels.clone());
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
        self.generation += 1;
        id
    }

    /// Drops samples older than the retention window behind `now_ms`, and series left
    /// without samples. A series is re-encoded only once its oldest sample is a quarter
    /// of the window past the cutoff, so the work is spread out and each series pays it
    /// a few times per window.
    pub fn prune(&mut self, now_ms: i64) {
        let cutoff = now_ms - self.retention_ms;
        let slack = self.retention_ms / 4;
        let mut removed = false;
        let mut buf = Vec::new();
        for id in 0..self.slots.len() {
            let Some(series) = self.slots[id].as_mut() else {
                continue;
            };
            if series.count == 0 || series.end.t < cutoff {
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
                self.generation += 1;
                removed = true;
                continue;
            }
            if series.first_t < cutoff - slack || (slack == 0 && series.first_t < cutoff) {
                buf.clear();
                series.range_into(cutoff - 1, i64::MAX, &mut buf);
                series.rebuild(&buf);
            }
        }
        if removed {
            // Strings only the interner still holds belong to series that are gone.
            self.strings.retain(|s| Arc::strong_count(s) > 1);
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

    /// The hasher [`Self::indexed`] callers must hash keys with: seeded per store.
    pub fn key_hasher(&self) -> &Fast {
        &self.key_state
    }

    /// Ids of the series named `name`, by `hash` of their labels; `key` names the
    /// hash (which labels it reads) for the cache. Built by one scan, then reused until
    /// a series is added or removed, so that a lookup of a few label sets among a fleet's
    /// hundreds of thousands of series costs a few probes instead of a scan.
    pub fn indexed(&self, name: &str, key: &str, hash: impl Fn(&Labels) -> u64) -> Arc<KeyedIds> {
        let cache_key = format!("{name}\u{0}{key}");
        let mut cache = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((generation, ids)) = cache.get(&cache_key)
            && *generation == self.generation
        {
            return ids.clone();
        }
        let mut map: KeyedIds = HashMap::default();
        for id in self.by_name.get(name).into_iter().flatten() {
            if let Some(s) = &self.slots[*id] {
                map.entry(hash(&s.labels)).or_default().push(*id as u32);
            }
        }
        let ids = Arc::new(map);
        cache.insert(cache_key, (self.generation, ids.clone()));
        ids
    }

    /// The series with id `id`, as listed by [`Self::indexed`].
    pub fn series_by_id(&self, id: u32) -> Option<&StoredSeries> {
        self.slots.get(id as usize)?.as_ref()
    }

    /// Number of live series.
    pub fn series_count(&self) -> usize {
        self.by_labels.len()
    }

    /// Number of stored samples across all series.
    pub fn sample_count(&self) -> usize {
        self.slots.iter().flatten().map(StoredSeries::len).sum()
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
    fn samples_round_trip_through_the_encoding() {
        let awkward = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f64::NAN,
            f64::from_bits(STALE_NAN_BITS),
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.1,
            1e300,
            -5e-324,
            9_007_199_254_740_992.0,
            9_007_199_254_740_993.0,
            -9_007_199_254_740_991.0,
            i64::MAX as f64,
            42.0,
            42.0,
        ];
        let mut store = SeriesStore::new(i64::MAX / 4);
        let x = l(&[("__name__", "x")]);
        let mut expected = Vec::new();
        let mut t = -5_000_i64;
        // Irregular steps, integer runs, repeats and special values.
        for i in 0..500_i64 {
            t += [15_000, 15_000, 1, 30_000, 14_999, 1_000_000_000][i as usize % 6];
            let v = match i % 5 {
                0 => awkward[i as usize % awkward.len()],
                1 => (i * 1_000) as f64,
                2 => (i * 1_000 + i * i) as f64,
                3 => i as f64 * 0.37,
                _ => expected.last().map_or(0.0, |(_, v): &(i64, f64)| *v),
            };
            assert_eq!(store.append(&x, t, v), AppendOutcome::Appended);
            expected.push((t, v));
        }
        let series = store.series_named(Some("x")).next().unwrap();
        let bits = |v: &[(i64, f64)]| v.iter().map(|(t, v)| (*t, v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&series.samples()), bits(&expected));
        // Every window and point lookup agrees with a plain scan.
        for (i, (t, _)) in expected.iter().enumerate().step_by(7) {
            let mut got = Vec::new();
            series.range_into(*t - 40_000, *t, &mut got);
            let want: Vec<_> = expected
                .iter()
                .copied()
                .filter(|(st, _)| *st > *t - 40_000 && *st <= *t)
                .collect();
            assert_eq!(bits(&got), bits(&want));
            assert_eq!(
                series.at_or_before(*t).map(|(t, v)| (t, v.to_bits())),
                Some((expected[i].0, expected[i].1.to_bits()))
            );
        }
        assert_eq!(series.at_or_before(expected[0].0 - 1), None);
    }

    #[test]
    fn regular_integer_series_cost_about_a_byte_per_sample() {
        let mut store = SeriesStore::new(i64::MAX / 4);
        let x = l(&[("__name__", "offset")]);
        for i in 0..120 {
            store.append(&x, i * 30_000, (1_000_000 + i * 500) as f64);
        }
        let series = store.series_named(Some("offset")).next().unwrap();
        assert!(series.data.len() < 150, "{} bytes", series.data.len());
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
        let samples = store.series_named(Some("up")).next().unwrap().samples();
        assert_eq!(samples, vec![(2_000, 3.0)]);
        store.prune(10_000);
        assert_eq!(store.series_count(), 0);
        assert_eq!(store.series_named(Some("up")).count(), 0);
    }
}
