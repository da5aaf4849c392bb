//! Rule groups in evaluation: recording rules write back into the store, alerting rules
//! move alerts through inactive, pending, firing and resolved as Prometheus does.

use std::collections::{BTreeMap, HashMap, HashSet};

use foresight_proto::v1::{Alert, AlertState};

use crate::promql::{Evaluator, Value};
use crate::rulefile::{Group, Rule};
use crate::store::{Labels, METRIC_NAME, STALE_NAN_BITS, SeriesStore};
use crate::template::{Context, QuerySample};

/// How long a resolved alert is still reported (Prometheus' `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone)]
struct Active {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    value: f64,
    state: AlertState,
    active_at_ms: i64,
    fired_at_ms: i64,
    resolved_at_ms: i64,
    last_seen_ms: i64,
}

impl Active {
    fn to_alert(&self, tenant: &str, fingerprint: &str) -> Alert {
        Alert {
            tenant: tenant.to_string(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            state: self.state as i32,
            active_at_ms: self.active_at_ms,
            fired_at_ms: self.fired_at_ms,
            resolved_at_ms: self.resolved_at_ms,
            value: self.value,
            fingerprint: fingerprint.to_string(),
            generator_url: String::new(),
        }
    }
}

/// Whether a group with its own interval is due at `ts_ms`; a second of slack (less for
/// short intervals) absorbs timer jitter so that a 1m group on a 15s tick runs every
/// fourth tick, not every fifth.
fn due(group: &Group, last: Option<i64>, ts_ms: i64) -> bool {
    match (group.interval, last) {
        (Some(iv), Some(last)) => {
            let iv = iv.as_millis() as i64;
            ts_ms - last >= iv - (iv / 10).min(1000)
        }
        _ => true,
    }
}

#[derive(Debug, Clone)]
struct RuleState {
    rule: Rule,
    active: HashMap<String, Active>,
    /// `ALERTS` and `ALERTS_FOR_STATE` series written at the last evaluation, so that
    /// the ones that end get a staleness marker.
    written: HashSet<Labels>,
    health: RuleHealth,
}

/// How a rule's last evaluation went, as Prometheus' rules API reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleHealth {
    /// When it last ran, Unix ms (0 before its first evaluation).
    pub last_evaluation_ms: i64,
    /// How long that took, seconds.
    pub evaluation_seconds: f64,
    /// What went wrong then, if anything.
    pub last_error: Option<String>,
}

/// One alert's state, saved by the service so that a restart neither forgets a pending
/// `for` nor re-fires what already fired.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedAlert {
    /// Group name.
    pub group: String,
    /// Rule name.
    pub rule: String,
    /// Labels, with `alertname`.
    pub labels: BTreeMap<String, String>,
    /// Annotations as last rendered.
    pub annotations: BTreeMap<String, String>,
    /// Last value (0 when it was not finite: JSON has no NaN).
    pub value: f64,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// When the condition became true, Unix ms.
    pub active_at_ms: i64,
    /// When it started firing, Unix ms (0 if it has not).
    pub fired_at_ms: i64,
    /// When it resolved, Unix ms (0 if it has not).
    pub resolved_at_ms: i64,
    /// Last evaluation that saw the condition true, Unix ms.
    pub last_seen_ms: i64,
}

/// What one evaluation produced.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Every alert that is pending, firing, or resolved within the retention.
    pub alerts: Vec<Alert>,
    /// Rule errors, each naming the group and rule; other rules still ran.
    pub errors: Vec<String>,
}

/// How much history, in ms, a store must keep for `groups`: their longest read-back, and
/// at least the lookback delta.
pub fn retention_ms<'a>(groups: impl IntoIterator<Item = &'a Group>) -> i64 {
    groups
        .into_iter()
        .map(Group::max_lookback_ms)
        .max()
        .unwrap_or(0)
        .max(crate::promql::LOOKBACK_MS)
}

/// The loaded rule groups of one tenant and their alert states.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    groups: Vec<(Group, Vec<RuleState>)>,
    /// When each group last ran, for groups with their own `interval`.
    last_eval_ms: Vec<Option<i64>>,
    group_intervals: bool,
    external_labels: BTreeMap<String, String>,
}

impl RuleEngine {
    /// An engine running `groups`, with `external_labels` available to templates.
    pub fn new(groups: Vec<Group>, external_labels: BTreeMap<String, String>) -> Self {
        let groups: Vec<(Group, Vec<RuleState>)> = groups
            .into_iter()
            .map(|g| {
                let states = g
                    .rules
                    .iter()
                    .map(|r| RuleState {
                        rule: r.clone(),
                        active: HashMap::new(),
                        written: HashSet::new(),
                        health: RuleHealth::default(),
                    })
                    .collect();
                (g, states)
            })
            .collect();
        RuleEngine {
            last_eval_ms: vec![None; groups.len()],
            groups,
            group_intervals: true,
            external_labels,
        }
    }

    /// Whether a group's own `interval` spaces its evaluations (the default). `promtool
    /// test rules` evaluates every group at every step, and so does the unit-test runner.
    #[must_use]
    pub fn with_group_intervals(mut self, honour: bool) -> Self {
        self.group_intervals = honour;
        self
    }

    /// How much history, in ms, the store must keep for these rules.
    pub fn retention_ms(&self) -> i64 {
        retention_ms(self.groups.iter().map(|(g, _)| g))
    }

    /// Every alert's state, for saving.
    pub fn saved_states(&self) -> Vec<SavedAlert> {
        let mut out = Vec::new();
        for (group, rules) in &self.groups {
            for state in rules {
                for a in state.active.values() {
                    out.push(SavedAlert {
                        group: group.name.clone(),
                        rule: state.rule.name.clone(),
                        labels: a.labels.clone(),
                        annotations: a.annotations.clone(),
                        value: if a.value.is_finite() { a.value } else { 0.0 },
                        state: match a.state {
                            AlertState::Pending => "pending",
                            AlertState::Firing => "firing",
                            _ => "resolved",
                        }
                        .into(),
                        active_at_ms: a.active_at_ms,
                        fired_at_ms: a.fired_at_ms,
                        resolved_at_ms: a.resolved_at_ms,
                        last_seen_ms: a.last_seen_ms,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.group, &a.rule, &a.labels).cmp(&(&b.group, &b.rule, &b.labels)));
        out
    }

    /// Restores saved states into the rules of the same group and name (others are
    /// dropped: their rule is gone); returns how many were restored. An alert restored
    /// as pending fires `for` after its original start, not after the restart.
    pub fn restore_states(&mut self, saved: Vec<SavedAlert>) -> usize {
        let mut n = 0;
        for s in saved {
            let Some(state) = self
                .groups
                .iter_mut()
                .filter(|(g, _)| g.name == s.group)
                .flat_map(|(_, rules)| rules.iter_mut())
                .find(|r| r.rule.name == s.rule)
            else {
                continue;
            };
            let alert_state = match s.state.as_str() {
                "pending" => AlertState::Pending,
                "firing" => AlertState::Firing,
                _ => AlertState::Resolved,
            };
            let fp = Alert::fingerprint_of(&s.labels);
            state.active.insert(
                fp,
                Active {
                    labels: s.labels,
                    annotations: s.annotations,
                    value: s.value,
                    state: alert_state,
                    active_at_ms: s.active_at_ms,
                    fired_at_ms: s.fired_at_ms,
                    resolved_at_ms: s.resolved_at_ms,
                    last_seen_ms: s.last_seen_ms,
                },
            );
            n += 1;
        }
        n
    }

    /// Each rule's last evaluation by (group, rule name), in file order.
    pub fn rule_health(&self) -> Vec<(&str, &str, &RuleHealth)> {
        self.groups
            .iter()
            .flat_map(|(g, rules)| {
                rules
                    .iter()
                    .map(move |s| (g.name.as_str(), s.rule.name.as_str(), &s.health))
            })
            .collect()
    }

    /// Number of rules loaded.
    pub fn rule_count(&self) -> usize {
        self.groups.iter().map(|(_, r)| r.len()).sum()
    }

    /// Evaluates every group at `ts_ms`, in file order; `tenant` is stamped on alerts.
    pub fn evaluate(&mut self, store: &mut SeriesStore, ts_ms: i64, tenant: &str) -> Evaluation {
        let mut out = Evaluation::default();
        for ((group, rules), last) in self.groups.iter_mut().zip(&mut self.last_eval_ms) {
            if self.group_intervals && !due(group, *last, ts_ms) {
                // Not due: its alerts stand as of its last evaluation.
                for state in rules.iter() {
                    out.alerts
                        .extend(state.active.iter().map(|(fp, a)| a.to_alert(tenant, fp)));
                }
                continue;
            }
            *last = Some(ts_ms);
            for state in rules.iter_mut() {
                let started = std::time::Instant::now();
                let errors_before = out.errors.len();
                evaluate_rule(
                    group,
                    state,
                    store,
                    ts_ms,
                    tenant,
                    &self.external_labels,
                    &mut out,
                );
                state.health = RuleHealth {
                    last_evaluation_ms: ts_ms,
                    evaluation_seconds: started.elapsed().as_secs_f64(),
                    last_error: out.errors.get(errors_before).cloned(),
                };
            }
        }
        out
    }
}

/// Evaluates one rule at `ts_ms` into `out` (its alerts, or its error).
fn evaluate_rule(
    group: &Group,
    state: &mut RuleState,
    store: &mut SeriesStore,
    ts_ms: i64,
    tenant: &str,
    external_labels: &BTreeMap<String, String>,
    out: &mut Evaluation,
) {
    let result = Evaluator::new(store).eval(&state.rule.expr, ts_ms);
    let samples = match result {
        Ok(Value::Vector(v)) => v,
        Ok(Value::Scalar(s)) => vec![crate::promql::Sample {
            labels: Labels::default(),
            value: s,
        }],
        Ok(_) => {
            out.errors.push(format!(
                "group {:?} rule {:?}: expression does not return a vector or scalar",
                group.name, state.rule.name
            ));
            return;
        }
        Err(e) => {
            out.errors.push(format!(
                "group {:?} rule {:?}: {e}",
                group.name, state.rule.name
            ));
            return;
        }
    };
    if group.limit > 0 && samples.len() as u64 > group.limit {
        out.errors.push(format!(
            "group {:?} rule {:?}: {} results exceed the limit of {}",
            group.name,
            state.rule.name,
            samples.len(),
            group.limit
        ));
        return;
    }
    if state.rule.alerting {
        if let Err(e) = update_alerts(state, samples, ts_ms, external_labels, store) {
            out.errors.push(format!(
                "group {:?} rule {:?}: {e}",
                group.name, state.rule.name
            ));
        }
        write_alert_series(store, state, ts_ms);
        out.alerts
            .extend(state.active.iter().map(|(fp, a)| a.to_alert(tenant, fp)));
    } else {
        for s in samples {
            let mut labels = s.labels.with(METRIC_NAME, &state.rule.name);
            for (k, t) in &state.rule.labels {
                labels = labels.with(
                    k,
                    &t.render(&Context {
                        labels: &BTreeMap::new(),
                        external_labels,
                        value: s.value,
                        query: None,
                        data: None,
                    }),
                );
            }
            store.append(&labels, ts_ms, s.value);
        }
    }
}

/// Writes Prometheus' `ALERTS{alertstate=...}` (1 per pending or firing alert) and
/// `ALERTS_FOR_STATE` (when the alert became active, in seconds), and staleness markers
/// for the series of alerts that ended, so rules and queries can read alert history.
fn write_alert_series(store: &mut SeriesStore, state: &mut RuleState, ts_ms: i64) {
    let mut written = HashSet::new();
    for a in state.active.values() {
        let alertstate = match a.state {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            _ => continue,
        };
        let base = Labels::new(a.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let alerts = base
            .with(METRIC_NAME, "ALERTS")
            .with("alertstate", alertstate);
        let for_state = base.with(METRIC_NAME, "ALERTS_FOR_STATE");
        store.append(&alerts, ts_ms, 1.0);
        store.append(&for_state, ts_ms, a.active_at_ms as f64 / 1000.0);
        written.insert(alerts);
        written.insert(for_state);
    }
    for gone in state.written.difference(&written) {
        store.append(gone, ts_ms, f64::from_bits(STALE_NAN_BITS));
    }
    state.written = written;
}

/// The `query` template function: runs `q` against the store at the evaluation time.
fn template_query(store: &SeriesStore, q: &str, ts_ms: i64) -> Result<Vec<QuerySample>, String> {
    let expr = crate::promql::parse_supported(q)?;
    let to_map = |l: &Labels| {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    match Evaluator::new(store)
        .eval(&expr, ts_ms)
        .map_err(|e| e.to_string())?
    {
        Value::Vector(v) => Ok(v
            .iter()
            .map(|s| QuerySample {
                labels: to_map(&s.labels),
                value: s.value,
            })
            .collect()),
        Value::Scalar(v) => Ok(vec![QuerySample {
            labels: BTreeMap::new(),
            value: v,
        }]),
        _ => Err(format!("query {q:?} does not return a vector or scalar")),
    }
}

type Candidate = (BTreeMap<String, String>, BTreeMap<String, String>, f64);

fn update_alerts(
    state: &mut RuleState,
    samples: Vec<crate::promql::Sample>,
    ts_ms: i64,
    external_labels: &BTreeMap<String, String>,
    store: &SeriesStore,
) -> Result<(), String> {
    let rule = &state.rule;
    let query = |q: &str| template_query(store, q, ts_ms);
    // fingerprint -> (labels, annotations, value)
    let mut seen: HashMap<String, Candidate> = HashMap::new();
    for s in samples {
        let base: BTreeMap<String, String> = s
            .labels
            .without_name()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ctx = Context {
            labels: &base,
            external_labels,
            value: s.value,
            query: Some(&query),
            data: None,
        };
        let mut labels = base.clone();
        for (k, t) in &rule.labels {
            let v = t.render(&ctx);
            if v.is_empty() {
                labels.remove(k);
            } else {
                labels.insert(k.clone(), v);
            }
        }
        labels.insert("alertname".into(), rule.name.clone());
        let annotations = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.render(&ctx)))
            .collect();
        let fp = Alert::fingerprint_of(&labels);
        if seen
            .insert(fp.clone(), (labels, annotations, s.value))
            .is_some()
        {
            return Err(
                "vector contains metrics with the same labelset after applying alert labels".into(),
            );
        }
    }
    for (fp, (labels, annotations, value)) in seen.iter() {
        match state.active.get_mut(fp) {
            Some(a) if a.state != AlertState::Resolved => {
                a.value = *value;
                a.annotations = annotations.clone();
                a.last_seen_ms = ts_ms;
            }
            _ => {
                state.active.insert(
                    fp.clone(),
                    Active {
                        labels: labels.clone(),
                        annotations: annotations.clone(),
                        value: *value,
                        state: AlertState::Pending,
                        active_at_ms: ts_ms,
                        fired_at_ms: 0,
                        resolved_at_ms: 0,
                        last_seen_ms: ts_ms,
                    },
                );
            }
        }
    }
    let for_ms = rule.for_.as_millis() as i64;
    let keep_ms = rule.keep_firing_for.as_millis() as i64;
    state.active.retain(|fp, a| {
        if seen.contains_key(fp) {
            if a.state == AlertState::Pending && ts_ms - a.active_at_ms >= for_ms {
                a.state = AlertState::Firing;
                a.fired_at_ms = ts_ms;
            }
            return true;
        }
        match a.state {
            AlertState::Pending => false,
            AlertState::Firing if keep_ms > 0 && ts_ms - a.last_seen_ms < keep_ms => true,
            AlertState::Firing => {
                a.state = AlertState::Resolved;
                a.resolved_at_ms = ts_ms;
                true
            }
            _ => ts_ms - a.resolved_at_ms < RESOLVED_RETENTION_MS,
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rulefile::load_str;

    fn engine(yaml: &str) -> RuleEngine {
        RuleEngine::new(load_str("t.yml", yaml).unwrap(), BTreeMap::new())
    }

    fn states(e: &Evaluation) -> Vec<AlertState> {
        e.alerts.iter().map(|a| a.state()).collect()
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let mut engine = engine(
            "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 1m\n    annotations: {summary: '{{ $labels.job }} is down'}\n",
        );
        let mut store = SeriesStore::new(3_600_000);
        let up = Labels::new([
            ("__name__".into(), "up".into()),
            ("job".into(), "kafka".into()),
        ]);
        for (t, v) in [(0, 0.0), (30_000, 0.0), (60_000, 0.0), (90_000, 1.0)] {
            store.append(&up, t, v);
        }
        assert_eq!(
            states(&engine.evaluate(&mut store, 0, "t")),
            vec![AlertState::Pending]
        );
        assert_eq!(
            states(&engine.evaluate(&mut store, 30_000, "t")),
            vec![AlertState::Pending]
        );
        let firing = engine.evaluate(&mut store, 60_000, "t");
        assert_eq!(states(&firing), vec![AlertState::Firing]);
        assert_eq!(firing.alerts[0].annotations["summary"], "kafka is down");
        assert_eq!(firing.alerts[0].labels["alertname"], "Down");
        let resolved = engine.evaluate(&mut store, 90_000, "t");
        assert_eq!(states(&resolved), vec![AlertState::Resolved]);
        assert_eq!(resolved.alerts[0].resolved_at_ms, 90_000);
    }

    #[test]
    fn each_rule_reports_its_last_evaluation_and_error() {
        // The group's limit of 1 is exceeded by the second rule only.
        let mut engine = engine(
            "groups:\n- name: g\n  limit: 1\n  rules:\n  - alert: One\n    expr: up == 0\n  - alert: Many\n    expr: up >= 0\n",
        );
        let mut store = SeriesStore::new(3_600_000);
        for job in ["a", "b"] {
            let up = Labels::new([("__name__".into(), "up".into()), ("job".into(), job.into())]);
            store.append(&up, 0, f64::from(u8::from(job == "b")));
        }
        assert!(
            engine
                .rule_health()
                .iter()
                .all(|(_, _, h)| h.last_evaluation_ms == 0)
        );
        engine.evaluate(&mut store, 15_000, "t");
        let health = engine.rule_health();
        assert_eq!(health.len(), 2);
        let (g, one, h) = health[0];
        assert_eq!(
            (g, one, h.last_evaluation_ms, h.last_error.as_deref()),
            ("g", "One", 15_000, None)
        );
        let (_, many, h) = health[1];
        assert_eq!(many, "Many");
        let err = h.last_error.as_deref().unwrap_or_default();
        assert!(err.contains("exceed the limit of 1"), "{err}");
    }

    #[test]
    fn a_restored_pending_alert_keeps_its_start() {
        let yaml =
            "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 1m\n";
        let up = Labels::new([("__name__".into(), "up".into()), ("job".into(), "k".into())]);
        let mut store = SeriesStore::new(3_600_000);
        for t in [0, 30_000, 60_000] {
            store.append(&up, t, 0.0);
        }
        let mut before = engine(yaml);
        before.evaluate(&mut store, 0, "t");
        before.evaluate(&mut store, 30_000, "t");
        let saved = before.saved_states();
        assert_eq!(saved[0].state, "pending");
        // A new engine (the restarted service) with the saved state fires at 60 s, one
        // minute after the original start; without it the alert would start over.
        let mut after = engine(yaml);
        assert_eq!(after.restore_states(saved), 1);
        let e = after.evaluate(&mut store, 60_000, "t");
        assert_eq!(states(&e), vec![AlertState::Firing]);
        assert_eq!(e.alerts[0].active_at_ms, 0);
        let mut fresh = engine(yaml);
        assert_eq!(
            states(&fresh.evaluate(&mut store, 60_000, "t")),
            vec![AlertState::Pending]
        );
    }

    #[test]
    fn alerts_series_follow_the_alert_state() {
        let mut engine = engine(
            "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 1m\n",
        );
        let mut store = SeriesStore::new(3_600_000);
        let up = Labels::new([("__name__".into(), "up".into()), ("job".into(), "k".into())]);
        for (t, v) in [(0, 0.0), (60_000, 0.0), (120_000, 1.0)] {
            store.append(&up, t, v);
        }
        let q = |store: &SeriesStore, expr: &str, t: i64| match crate::promql::Evaluator::new(store)
            .eval(&crate::promql::parse_supported(expr).unwrap(), t)
            .unwrap()
        {
            crate::promql::Value::Vector(v) => v
                .into_iter()
                .map(|s| (s.labels.to_string(), s.value))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        engine.evaluate(&mut store, 0, "t");
        assert_eq!(
            q(&store, "ALERTS", 0),
            vec![(
                r#"ALERTS{alertname="Down", alertstate="pending", job="k"}"#.to_string(),
                1.0
            )]
        );
        engine.evaluate(&mut store, 60_000, "t");
        assert_eq!(
            q(&store, "ALERTS", 60_000),
            vec![(
                r#"ALERTS{alertname="Down", alertstate="firing", job="k"}"#.to_string(),
                1.0
            )]
        );
        assert_eq!(q(&store, "ALERTS_FOR_STATE", 60_000)[0].1, 0.0);
        engine.evaluate(&mut store, 120_000, "t");
        assert!(
            q(&store, "ALERTS", 120_000).is_empty(),
            "a resolved alert's series go stale"
        );
    }

    #[test]
    fn a_group_interval_spaces_its_evaluations() {
        let yaml = "groups:\n- name: slow\n  interval: 1m\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 30s\n- name: fast\n  rules:\n  - alert: DownFast\n    expr: up == 0\n";
        let mut store = SeriesStore::new(3_600_000);
        let up = Labels::new([("__name__".into(), "up".into())]);
        for t in 0..=8 {
            store.append(&up, t * 15_000, 0.0);
        }
        let mut engine = engine(yaml);
        let mut slow_states = Vec::new();
        for t in 0..=8 {
            let e = engine.evaluate(&mut store, t * 15_000, "t");
            let slow = e
                .alerts
                .iter()
                .find(|a| a.labels["alertname"] == "Down")
                .unwrap();
            slow_states.push(slow.state());
            assert!(e.alerts.iter().any(|a| a.labels["alertname"] == "DownFast"));
        }
        // Evaluated at 0 s and 60 s only: still pending at 30 and 45 s although `for`
        // has passed, firing from the 60 s evaluation.
        assert_eq!(slow_states[2], AlertState::Pending);
        assert_eq!(slow_states[3], AlertState::Pending);
        assert_eq!(slow_states[4], AlertState::Firing);
        let mut every_step = self::engine(yaml).with_group_intervals(false);
        for t in 0..2 {
            every_step.evaluate(&mut store, t * 15_000, "t");
        }
        let e = every_step.evaluate(&mut store, 30_000, "t");
        let slow = e
            .alerts
            .iter()
            .find(|a| a.labels["alertname"] == "Down")
            .unwrap();
        assert_eq!(slow.state(), AlertState::Firing);
    }

    #[test]
    fn pending_alert_that_clears_is_forgotten() {
        let mut engine = engine(
            "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 1m\n",
        );
        let mut store = SeriesStore::new(3_600_000);
        let up = Labels::new([("__name__".into(), "up".into())]);
        store.append(&up, 0, 0.0);
        store.append(&up, 30_000, 1.0);
        assert_eq!(engine.evaluate(&mut store, 0, "t").alerts.len(), 1);
        assert!(engine.evaluate(&mut store, 30_000, "t").alerts.is_empty());
    }

    #[test]
    fn recording_rules_feed_later_rules() {
        let mut engine = engine(
            "groups:\n- name: g\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n  - alert: AllDown\n    expr: 'job:up:sum == 0'\n",
        );
        let mut store = SeriesStore::new(3_600_000);
        store.append(
            &Labels::new([("__name__".into(), "up".into()), ("job".into(), "a".into())]),
            0,
            0.0,
        );
        let e = engine.evaluate(&mut store, 0, "t");
        assert_eq!(states(&e), vec![AlertState::Firing]);
        assert_eq!(e.alerts[0].labels.get("job").map(String::as_str), Some("a"));
    }
}
