//! Alertmanager's grouping, as operators know it: alerts are routed down the tree, put in
//! one aggregation group per route and `group_by` values, and a group notifies first
//! after `group_wait`, then on changes no more often than `group_interval`, and repeats
//! an unchanged notification after `repeat_interval`. Before each flush, inhibited and
//! silenced alerts are taken out and muted routes stay quiet; what each integration was
//! last told (the notification log) decides whether anything is new.
//!
//! Pure state over explicit Unix-millisecond times: the caller ticks it, so tests run
//! on any clock and a restart rebuilds groups from alerts while the log, which the
//! caller persists, keeps a change from being notified twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::{NotifyConfig, Route};
use crate::matchers::{Matcher, all_match};

/// An alert as the notifier sees it, from the rule engine or the Alertmanager API.
/// Serialized as JSON on cluster mode's alerts topic.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupAlert {
    /// Identity labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing, Unix ms.
    pub starts_at_ms: i64,
    /// When it stops (or stopped) firing, Unix ms; in the future while firing.
    pub ends_at_ms: i64,
    /// Link to the rule.
    pub generator_url: String,
    /// Stable hex fingerprint of `labels`.
    pub fingerprint: String,
}

impl GroupAlert {
    /// Whether the alert is resolved at `now_ms`.
    pub fn resolved_at(&self, now_ms: i64) -> bool {
        self.ends_at_ms > 0 && self.ends_at_ms <= now_ms
    }
}

/// What one integration was last told about one group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogEntry {
    /// Fingerprints notified as firing.
    pub firing: BTreeSet<String>,
    /// Fingerprints notified as resolved.
    pub resolved: BTreeSet<String>,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// One receiver integration: a receiver's n-th Slack, email or webhook config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntegrationId {
    /// Receiver name.
    pub receiver: String,
    /// `slack`, `email` or `webhook`.
    pub kind: &'static str,
    /// Index within the receiver's configs of that kind.
    pub index: usize,
}

impl std::fmt::Display for IntegrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.receiver, self.kind, self.index)
    }
}

/// A notification a flush calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupNotification {
    /// Which integration sends it.
    pub integration: IntegrationId,
    /// Route path and group labels, stable across restarts.
    pub group_key: String,
    /// Alertmanager's key for the same group (`{}/{severity="critical"}:{alertname="X"}`):
    /// the webhook's `groupKey`, and hashed, the PagerDuty `dedup_key` and Opsgenie
    /// `alias`, so that incidents opened by an Alertmanager stay the same incidents
    /// after a move to Foresight. Unlike `group_key` it can be shared by sibling routes
    /// with the same matchers, as in Alertmanager.
    pub alertmanager_key: String,
    /// The labels the group was formed by.
    pub group_labels: BTreeMap<String, String>,
    /// Firing alerts, then resolved ones when the integration sends resolved.
    pub alerts: Vec<GroupAlert>,
    /// Whether any alert fires.
    pub firing: bool,
    /// The log entry to store with the notification.
    pub log: LogEntry,
}

/// Mutes alerts; implemented by the silence store.
pub trait Silencer {
    /// Whether an active silence at `now_ms` matches `labels`.
    fn silenced(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool;
}

impl Silencer for () {
    fn silenced(&self, _: &BTreeMap<String, String>, _: i64) -> bool {
        false
    }
}

struct Group {
    route: usize,
    labels: BTreeMap<String, String>,
    alerts: BTreeMap<String, GroupAlert>,
    next_flush_ms: i64,
    /// Whether the group has flushed at least once (then `group_interval` paces it).
    flushed: bool,
}

/// Routes flattened in tree order, with each one's children.
struct FlatRoute {
    route: Route,
    children: Vec<usize>,
    path: String,
    /// Alertmanager's route key: the parents' keys and this route's sorted matchers.
    alertmanager_key: String,
}

/// The grouping state of one tenant.
pub struct Grouper {
    config: NotifyConfig,
    routes: Vec<FlatRoute>,
    groups: BTreeMap<String, Group>,
    log: HashMap<(String, IntegrationId), LogEntry>,
}

impl Grouper {
    /// A grouper for `config`, with the notification log `log` (from the store).
    pub fn new(config: NotifyConfig, log: HashMap<(String, IntegrationId), LogEntry>) -> Self {
        let mut routes = Vec::new();
        flatten(&config.route, "0".into(), "", &mut routes);
        Grouper {
            config,
            routes,
            groups: BTreeMap::new(),
            log,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// The routes `labels` go to, as indexes: Alertmanager's first-match-unless-continue
    /// descent, the node itself when no child matches.
    fn route_of(&self, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let mut out = Vec::new();
        self.descend(0, labels, &mut out);
        out
    }

    fn descend(&self, at: usize, labels: &BTreeMap<String, String>, out: &mut Vec<usize>) {
        let before = out.len();
        for &c in &self.routes[at].children {
            if !all_match(&self.routes[c].route.matchers, labels) {
                continue;
            }
            self.descend(c, labels, out);
            if !self.routes[c].route.continue_ {
                break;
            }
        }
        if out.len() == before {
            out.push(at);
        }
    }

    /// Adds or updates alerts at `now_ms`; a new group flushes after its `group_wait`.
    pub fn insert(&mut self, alerts: impl IntoIterator<Item = GroupAlert>, now_ms: i64) {
        for alert in alerts {
            for r in self.route_of(&alert.labels) {
                let route = &self.routes[r].route;
                let labels: BTreeMap<String, String> = match &route.group_by {
                    None => alert.labels.clone(),
                    Some(by) => by
                        .iter()
                        .filter_map(|l| alert.labels.get(l).map(|v| (l.clone(), v.clone())))
                        .collect(),
                };
                let key = format!("{}:{}", self.routes[r].path, label_string(&labels));
                let wait = route.group_wait.as_millis() as i64;
                let group = self.groups.entry(key).or_insert_with(|| Group {
                    route: r,
                    labels,
                    alerts: BTreeMap::new(),
                    next_flush_ms: now_ms + wait,
                    flushed: false,
                });
                group
                    .alerts
                    .insert(alert.fingerprint.clone(), alert.clone());
            }
        }
    }

    /// The earliest time a group is due, for the caller's timer.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush_ms).min()
    }

    /// Flushes the groups due at `now_ms` and returns the notifications they call for;
    /// the caller stores them (with their log entries) and then calls
    /// [`notified`](Self::notified) for each.
    pub fn flush_due(&mut self, now_ms: i64, silences: &dyn Silencer) -> Vec<GroupNotification> {
        let inhibited = self.inhibited(now_ms);
        let mut out = Vec::new();
        let mut emptied = Vec::new();
        for (key, group) in &mut self.groups {
            if group.next_flush_ms > now_ms {
                continue;
            }
            let route = &self.routes[group.route].route;
            group.next_flush_ms = now_ms + route.group_interval.as_millis() as i64;
            group.flushed = true;
            let muted = route.mute_time_intervals.iter().any(|n| {
                self.config
                    .time_intervals
                    .get(n)
                    .is_some_and(|is| is.iter().any(|i| i.contains(now_ms)))
            }) || (!route.active_time_intervals.is_empty()
                && !route.active_time_intervals.iter().any(|n| {
                    self.config
                        .time_intervals
                        .get(n)
                        .is_some_and(|is| is.iter().any(|i| i.contains(now_ms)))
                }));
            let visible: Vec<&GroupAlert> = group
                .alerts
                .values()
                .filter(|a| {
                    !inhibited.contains(&a.fingerprint) && !silences.silenced(&a.labels, now_ms)
                })
                .collect();
            let firing: Vec<&GroupAlert> = visible
                .iter()
                .copied()
                .filter(|a| !a.resolved_at(now_ms))
                .collect();
            let resolved: Vec<&GroupAlert> = visible
                .iter()
                .copied()
                .filter(|a| a.resolved_at(now_ms))
                .collect();
            if !muted {
                for integration in integrations(&self.config, &route.receiver) {
                    let send_resolved = send_resolved(&self.config, &integration);
                    let firing_set: BTreeSet<String> =
                        firing.iter().map(|a| a.fingerprint.clone()).collect();
                    let resolved_set: BTreeSet<String> =
                        resolved.iter().map(|a| a.fingerprint.clone()).collect();
                    let entry = self.log.get(&(key.clone(), integration.clone()));
                    if !needs_update(
                        entry,
                        &firing_set,
                        &resolved_set,
                        send_resolved,
                        now_ms,
                        route.repeat_interval.as_millis() as i64,
                    ) {
                        continue;
                    }
                    let mut alerts: Vec<GroupAlert> = firing.iter().map(|a| (*a).clone()).collect();
                    if send_resolved {
                        alerts.extend(resolved.iter().map(|a| (*a).clone()));
                    }
                    // Alertmanager's order: by labels, then start.
                    alerts.sort_by(|a, b| {
                        (&a.labels, a.starts_at_ms).cmp(&(&b.labels, b.starts_at_ms))
                    });
                    let log = LogEntry {
                        firing: firing_set,
                        resolved: resolved_set,
                        at_ms: now_ms,
                    };
                    if alerts.is_empty() {
                        // Nothing to say to this integration (all resolved, and it does
                        // not want resolved): remember, so the next firing is news.
                        self.log.insert((key.clone(), integration), log);
                        continue;
                    }
                    out.push(GroupNotification {
                        integration,
                        group_key: key.clone(),
                        alertmanager_key: format!(
                            "{}:{}",
                            self.routes[group.route].alertmanager_key,
                            go_label_set(&group.labels)
                        ),
                        group_labels: group.labels.clone(),
                        firing: !firing.is_empty(),
                        alerts,
                        log,
                    });
                }
            }
            // Resolved alerts leave the group once a flush has seen them.
            group.alerts.retain(|_, a| !a.resolved_at(now_ms));
            if group.alerts.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.groups.remove(&key);
        }
        out
    }

    /// Records that `n` was stored for delivery.
    pub fn notified(&mut self, n: &GroupNotification) {
        self.log
            .insert((n.group_key.clone(), n.integration.clone()), n.log.clone());
    }

    /// The groups with their route's receiver and their alerts, for the API.
    pub fn groups(
        &self,
    ) -> impl Iterator<Item = (&str, &str, &BTreeMap<String, String>, Vec<&GroupAlert>)> {
        self.groups.iter().map(|(k, g)| {
            (
                k.as_str(),
                self.routes[g.route].route.receiver.as_str(),
                &g.labels,
                g.alerts.values().collect(),
            )
        })
    }

    /// Fingerprints of the alerts a firing alert inhibits at `now_ms`: inhibition looks
    /// at every firing alert, whatever its group.
    pub fn inhibited(&self, now_ms: i64) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let sources: Vec<&GroupAlert> = self
            .groups
            .values()
            .flat_map(|g| g.alerts.values())
            .filter(|a| !a.resolved_at(now_ms) && seen.insert(a.fingerprint.clone()))
            .collect();
        self.groups
            .values()
            .flat_map(|g| g.alerts.values())
            .filter(|a| inhibits(&self.config.inhibit_rules, &sources, a))
            .map(|a| a.fingerprint.clone())
            .collect()
    }

    /// Names of the receivers `labels` route to.
    pub fn receivers_of(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mut names: Vec<String> = self
            .route_of(labels)
            .into_iter()
            .map(|r| self.routes[r].route.receiver.clone())
            .collect();
        names.dedup();
        names
    }
}

fn flatten(route: &Route, path: String, parent_key: &str, out: &mut Vec<FlatRoute>) -> usize {
    let at = out.len();
    let mut matchers: Vec<&Matcher> = route.matchers.iter().collect();
    // Alertmanager sorts a route's matchers by name, value, then type (in the order
    // `=`, `!=`, `=~`, `!~`), and writes each value escaped as OpenMetrics does.
    let op_order = |m: &Matcher| m.op as u8;
    matchers
        .sort_by(|a, b| (&a.name, &a.value, op_order(a)).cmp(&(&b.name, &b.value, op_order(b))));
    let own: Vec<String> = matchers
        .iter()
        .map(|m| {
            let value = m
                .value
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('"', "\\\"");
            format!("{}{}\"{value}\"", m.name, m.op.as_str())
        })
        .collect();
    let own = format!("{{{}}}", own.join(","));
    let alertmanager_key = if parent_key.is_empty() {
        own
    } else {
        format!("{parent_key}/{own}")
    };
    out.push(FlatRoute {
        route: route.clone(),
        children: Vec::new(),
        path: path.clone(),
        alertmanager_key: alertmanager_key.clone(),
    });
    for (i, child) in route.routes.iter().enumerate() {
        let c = flatten(child, format!("{path}.{i}"), &alertmanager_key, out);
        out[at].children.push(c);
    }
    at
}

/// A label set as Go's `model.LabelSet.String()` writes it: `name="value"` pairs, each
/// value quoted as Go's `%q` does, sorted and joined by `, `.
fn go_label_set(labels: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    pairs.sort();
    format!("{{{}}}", pairs.join(", "))
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn label_string(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(","))
}

fn inhibits(
    rules: &[crate::config::InhibitRule],
    sources: &[&GroupAlert],
    target: &GroupAlert,
) -> bool {
    rules.iter().any(|r| {
        all_match(&r.target, &target.labels)
            && sources.iter().any(|s| {
                s.fingerprint != target.fingerprint
                    && all_match(&r.source, &s.labels)
                    && r.equal
                        .iter()
                        .all(|l| s.labels.get(l) == target.labels.get(l))
            })
    })
}

/// Alertmanager's dedup stage: notify when a firing alert is new to the integration,
/// when everything it was told fires has resolved, when a resolved alert is new to an
/// integration that wants resolved, or when the repeat interval has passed.
fn needs_update(
    entry: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    now_ms: i64,
    repeat_ms: i64,
) -> bool {
    let Some(entry) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&entry.firing) {
        return true;
    }
    if firing.is_empty() {
        // Told of firing alerts that have all resolved since: say so (or, for an
        // integration without resolved, record the silence).
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    entry.at_ms + repeat_ms <= now_ms
}

fn integrations(config: &NotifyConfig, receiver: &str) -> Vec<IntegrationId> {
    let Some(r) = config.receivers.get(receiver) else {
        return Vec::new();
    };
    let make = |kind, n| {
        (0..n).map(move |index| IntegrationId {
            receiver: receiver.to_string(),
            kind,
            index,
        })
    };
    make("slack", r.slack_configs.len())
        .chain(make("email", r.email_configs.len()))
        .chain(make("webhook", r.webhook_configs.len()))
        .chain(make("pagerduty", r.pagerduty_configs.len()))
        .chain(make("opsgenie", r.opsgenie_configs.len()))
        .chain(make("msteams", r.msteams_configs.len()))
        .chain(make("msteamsv2", r.msteamsv2_configs.len()))
        .collect()
}

fn send_resolved(config: &NotifyConfig, id: &IntegrationId) -> bool {
    let Some(r) = config.receivers.get(&id.receiver) else {
        return false;
    };
    let i = id.index;
    match id.kind {
        "slack" => r.slack_configs.get(i).is_some_and(|c| c.send_resolved),
        "email" => r.email_configs.get(i).is_some_and(|c| c.send_resolved),
        "pagerduty" => r.pagerduty_configs.get(i).is_some_and(|c| c.send_resolved),
        "opsgenie" => r.opsgenie_configs.get(i).is_some_and(|c| c.send_resolved),
        "msteams" => r.msteams_configs.get(i).is_some_and(|c| c.send_resolved),
        "msteamsv2" => r.msteamsv2_configs.get(i).is_some_and(|c| c.send_resolved),
        _ => r.webhook_configs.get(i).is_some_and(|c| c.send_resolved),
    }
}

/// Matchers of a silence or inhibition, for callers outside this module.
pub fn matches(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    all_match(matchers, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn config(yaml: &str) -> NotifyConfig {
        NotifyConfig::from_yaml(yaml).unwrap()
    }

    fn alert(name: &str, extra: &[(&str, &str)], starts: i64) -> GroupAlert {
        let mut labels = BTreeMap::from([("alertname".to_string(), name.to_string())]);
        for (k, v) in extra {
            labels.insert((*k).into(), (*v).into());
        }
        let fingerprint = foresight_proto::v1::Alert::fingerprint_of(&labels);
        GroupAlert {
            labels,
            annotations: BTreeMap::new(),
            starts_at_ms: starts,
            ends_at_ms: 0,
            generator_url: String::new(),
            fingerprint,
        }
    }

    fn names(n: &GroupNotification) -> Vec<String> {
        n.alerts
            .iter()
            .map(|a| {
                format!(
                    "{}{}",
                    a.labels["alertname"],
                    a.labels
                        .get("broker")
                        .map(|b| format!("/{b}"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    /// Flushes at `t`, records what was sent, and returns it.
    fn flush(g: &mut Grouper, t: i64) -> Vec<GroupNotification> {
        let out = g.flush_due(t, &());
        for n in &out {
            g.notified(n);
        }
        out
    }

    const BASIC: &str = r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs: [{url: "http://127.0.0.1:9/"}]
"#;

    #[test]
    fn group_wait_then_group_interval_then_repeat_interval() {
        let mut g = Grouper::new(config(BASIC), HashMap::new());
        g.insert([alert("BrokerDown", &[("broker", "1")], 0)], 0);
        assert!(flush(&mut g, 29 * S).is_empty(), "inside group_wait");
        g.insert([alert("BrokerDown", &[("broker", "2")], 10 * S)], 10 * S);
        let first = flush(&mut g, 30 * S);
        assert_eq!(first.len(), 1);
        assert_eq!(
            names(&first[0]),
            ["BrokerDown/1", "BrokerDown/2"],
            "one message for the group"
        );
        // A third alert joins: told at the next group_interval, not before.
        g.insert([alert("BrokerDown", &[("broker", "3")], 60 * S)], 60 * S);
        assert!(flush(&mut g, 200 * S).is_empty());
        let second = flush(&mut g, 330 * S);
        assert_eq!(names(&second[0]).len(), 3);
        // Unchanged: nothing until repeat_interval has passed since the last message.
        for t in (630..3930).step_by(300) {
            assert!(flush(&mut g, t * S).is_empty(), "at {t}s");
        }
        let reminder = flush(&mut g, 3930 * S);
        assert_eq!(reminder.len(), 1, "the reminder");
    }

    #[test]
    fn resolved_once_and_only_when_wanted() {
        let yaml = BASIC.replace("webhook_configs: [{url: \"http://127.0.0.1:9/\"}]", "webhook_configs: [{url: \"http://127.0.0.1:9/\"}, {url: \"http://127.0.0.1:9/quiet\", send_resolved: false}]");
        let mut g = Grouper::new(config(&yaml), HashMap::new());
        let mut a = alert("Hung", &[], 0);
        g.insert([a.clone()], 0);
        assert_eq!(flush(&mut g, 30 * S).len(), 2, "both integrations");
        a.ends_at_ms = 100 * S;
        g.insert([a.clone()], 100 * S);
        let resolved = flush(&mut g, 330 * S);
        assert_eq!(resolved.len(), 1, "only the one with send_resolved");
        assert!(!resolved[0].firing);
        assert_eq!(resolved[0].integration.index, 0);
        // The same resolved alert sent again (the rule engine repeats it): no repeat.
        g.insert([a.clone()], 340 * S);
        assert!(flush(&mut g, 370 * S).is_empty());
        assert!(flush(&mut g, 700 * S).is_empty());
        // It fires again: news for both.
        let again = alert("Hung", &[], 800 * S);
        g.insert([again], 800 * S);
        assert_eq!(flush(&mut g, 830 * S).len(), 2);
    }

    #[test]
    fn routes_continue_and_match_in_order() {
        let c = config(
            r#"
route:
  receiver: all
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - matchers: ['category="capacity"']
      receiver: capacity
    - matchers: ['severity=~"critical|warning"']
      receiver: team
receivers:
  - {name: all}
  - {name: pager}
  - {name: capacity}
  - {name: team}
"#,
        );
        let g = Grouper::new(c, HashMap::new());
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            g.receivers_of(&l(&[("severity", "critical"), ("category", "capacity")])),
            ["pager", "capacity"]
        );
        assert_eq!(g.receivers_of(&l(&[("severity", "warning")])), ["team"]);
        assert_eq!(g.receivers_of(&l(&[("severity", "info")])), ["all"]);
    }

    #[test]
    fn inhibition_mutes_the_warning_while_the_critical_fires() {
        let yaml = format!(
            "{BASIC}inhibit_rules:\n  - source_matchers: ['severity=\"critical\"']\n    target_matchers: ['severity=\"warning\"']\n    equal: [cluster]\n"
        );
        let mut g = Grouper::new(config(&yaml), HashMap::new());
        let mut crit = alert(
            "ClusterDown",
            &[("severity", "critical"), ("cluster", "a")],
            0,
        );
        let warn = alert(
            "UnderReplicated",
            &[("severity", "warning"), ("cluster", "a")],
            0,
        );
        let other = alert(
            "UnderReplicated",
            &[("severity", "warning"), ("cluster", "b")],
            0,
        );
        g.insert([crit.clone(), warn.clone(), other], 0);
        let sent = flush(&mut g, 30 * S);
        let all: Vec<String> = sent
            .iter()
            .flat_map(|n| {
                n.alerts
                    .iter()
                    .map(|a| format!("{}/{}", a.labels["alertname"], a.labels["cluster"]))
            })
            .collect();
        assert_eq!(all, ["ClusterDown/a", "UnderReplicated/b"]);
        // The critical one resolves: the warning is news at the next interval.
        crit.ends_at_ms = 60 * S;
        g.insert([crit], 60 * S);
        g.insert([warn], 60 * S);
        let next = flush(&mut g, 330 * S);
        assert!(
            next.iter().any(|n| n.firing
                && n.alerts
                    .iter()
                    .any(|a| a.labels["alertname"] == "UnderReplicated"
                        && a.labels["cluster"] == "a")),
            "{next:?}"
        );
    }

    struct Until(i64);
    impl Silencer for Until {
        fn silenced(&self, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
            labels.get("alertname").is_some_and(|n| n == "Noisy") && now_ms < self.0
        }
    }

    #[test]
    fn a_silence_holds_the_alert_back_until_it_ends() {
        let mut g = Grouper::new(config(BASIC), HashMap::new());
        g.insert([alert("Noisy", &[], 0)], 0);
        let silence = Until(400 * S);
        for t in [30, 330] {
            let out = g.flush_due(t * S, &silence);
            assert!(out.is_empty(), "silenced at {t}s");
        }
        let out = g.flush_due(630 * S, &silence);
        assert_eq!(out.len(), 1, "still firing when the silence ended");
    }

    #[test]
    fn a_mute_interval_keeps_the_route_quiet() {
        let yaml = format!(
            "{}\ntime_intervals:\n  - name: night\n    time_intervals:\n      - times: [{{start_time: '00:00', end_time: '06:00'}}]\n",
            BASIC.replace(
                "repeat_interval: 1h",
                "repeat_interval: 1h\n  mute_time_intervals: [night]"
            )
        );
        let mut g = Grouper::new(config(&yaml), HashMap::new());
        // 1970-01-01 00:00 UTC is in the night interval.
        g.insert([alert("Disk", &[], 0)], 0);
        assert!(flush(&mut g, 30 * S).is_empty());
        let six = 6 * 3600 * S;
        g.insert([alert("Disk", &[], 0)], six - 10 * S);
        assert_eq!(flush(&mut g, six + 30 * S).len(), 1, "after 06:00");
    }

    #[test]
    fn the_log_from_the_store_keeps_a_restart_from_repeating() {
        let mut g = Grouper::new(config(BASIC), HashMap::new());
        g.insert([alert("Disk", &[], 0)], 0);
        let sent = flush(&mut g, 30 * S);
        let log: HashMap<_, _> = sent
            .iter()
            .map(|n| ((n.group_key.clone(), n.integration.clone()), n.log.clone()))
            .collect();
        // A new process: the same alert arrives again from the restored rule state.
        let mut restarted = Grouper::new(config(BASIC), log);
        restarted.insert([alert("Disk", &[], 0)], 100 * S);
        assert!(flush(&mut restarted, 130 * S).is_empty(), "already told");
        assert_eq!(
            flush(&mut restarted, 3700 * S).len(),
            1,
            "the reminder still comes"
        );
    }
}
