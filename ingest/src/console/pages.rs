//! The console's pages as data: each page's model is built from the evaluator's views
//! and the store by a pure function, and rendered by an askama template (checked at
//! compile time, HTML-escaped by default), so that the benchmark renders exactly what a
//! request renders.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use foresight_notifier::matchers::Matcher;
use foresight_notifier::silence::Silence;

use crate::evaluator::views::{AlertView, ClusterInfo};
use crate::store::HistoryEntry;

/// A cluster whose agents have been silent this long is stale.
pub const STALE_AFTER_MS: i64 = 5 * 60_000;
/// Rows per page of the cluster page's topics and groups.
pub const PAGE_ROWS: usize = 50;

/// What every page shows around its content.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Page title.
    pub title: String,
    /// Tenant name.
    pub tenant: String,
    /// `read` or `admin`.
    pub scope: String,
    /// Whether the session may change things.
    pub can_change: bool,
    /// The session's CSRF token, carried by every form.
    pub csrf: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    /// A message to show once (after a change).
    pub notice: String,
}

impl Layout {
    /// Asset URLs carry the build's version, so that a new build's files are fetched.
    pub fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}

/// How long ago `ms` was, at `now`.
pub fn ago(now: i64, ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86_400 => format!("{} h {} min ago", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h ago", s / 86_400, s % 86_400 / 3600),
    }
}

/// A duration in seconds for a person.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "–".into();
    }
    let s = secs.max(0.0) as i64;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// Bytes for a person.
pub fn bytes(n: i64) -> String {
    if n < 0 {
        return "–".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn rfc3339(ms: i64) -> String {
    foresight_notifier::payload::rfc3339_ms(ms)
}

/// A PromQL string literal of `s`.
pub fn promql_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An alert's severity as a rank (higher is worse) and its name.
fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" | "page" | "error" => 3,
        "warning" | "warn" => 2,
        "info" | "none" => 1,
        _ => 2,
    }
}

/// The health of a set of open alerts: the worst severity, or `ok`.
fn health_of<'a>(severities: impl Iterator<Item = &'a str>) -> (&'static str, u8) {
    match severities.map(severity_rank).max() {
        None => ("ok", 0),
        Some(3) => ("critical", 3),
        Some(2) => ("warning", 2),
        Some(_) => ("info", 1),
    }
}

/// The link that opens the silence form with `labels` as its matchers.
pub fn silence_href(labels: &BTreeMap<String, String>) -> String {
    let matchers: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "severity" | "category"))
        .map(|(k, v)| Matcher::equal(k, v).to_string())
        .collect();
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("matchers", &matchers.join("\n"))
        .finish();
    format!("/silences/new?{q}")
}

/// One open alert as the pages show it.
#[derive(Debug, Clone)]
pub struct AlertCard {
    /// `alertname`.
    pub alertname: String,
    /// `critical`, `warning` or `info`.
    pub severity: &'static str,
    /// Its `cluster` label, empty when none.
    pub cluster: String,
    /// Summary annotation (or description).
    pub summary: String,
    /// Description annotation.
    pub description: String,
    /// Runbook link, empty when none.
    pub runbook: String,
    /// Since when, for a person.
    pub since: String,
    /// Since when, RFC 3339.
    pub since_title: String,
    /// `firing`, `silenced` or `inhibited`.
    pub state: &'static str,
    /// The silences that mute it.
    pub silenced_by: Vec<String>,
    /// Every label, as `name="value"`.
    pub labels: Vec<String>,
    /// The silence form for it.
    pub silence_href: String,
    /// Its receivers.
    pub receivers: String,
    /// Fingerprint.
    pub fingerprint: String,
}

/// The open alerts of `views` at `now`, silenced ones marked, worst first.
pub fn alert_cards(views: &[AlertView], silences: &[Silence], now: i64) -> Vec<AlertCard> {
    let mut cards: Vec<(u8, i64, AlertCard)> = views
        .iter()
        .filter(|v| !v.alert.resolved_at(now))
        .map(|v| {
            let a = &v.alert;
            let sev = a.labels.get("severity").map_or("warning", String::as_str);
            let (severity, rank) = health_of(std::iter::once(sev));
            let silenced_by: Vec<String> = silences
                .iter()
                .filter(|s| s.mutes(&a.labels, now))
                .map(|s| s.id.clone())
                .collect();
            let state = if !silenced_by.is_empty() {
                "silenced"
            } else if v.inhibited {
                "inhibited"
            } else {
                "firing"
            };
            let ann = |k: &str| a.annotations.get(k).cloned().unwrap_or_default();
            let description = ann("description");
            let mut summary = ann("summary");
            if summary.is_empty() {
                summary = description.clone();
            }
            (
                rank,
                a.starts_at_ms,
                AlertCard {
                    alertname: a.labels.get("alertname").cloned().unwrap_or_default(),
                    severity,
                    cluster: a.labels.get("cluster").cloned().unwrap_or_default(),
                    summary,
                    description,
                    runbook: ann("runbook_url"),
                    since: ago(now, a.starts_at_ms),
                    since_title: rfc3339(a.starts_at_ms),
                    state,
                    silenced_by,
                    labels: a
                        .labels
                        .iter()
                        .map(|(k, v)| Matcher::equal(k, v).to_string())
                        .collect(),
                    silence_href: silence_href(&a.labels),
                    receivers: v.receivers.join(", "),
                    fingerprint: a.fingerprint.clone(),
                },
            )
        })
        .collect();
    cards.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    cards.into_iter().map(|(_, _, c)| c).collect()
}

// ---------------------------------------------------------------- fleet

/// One cluster on the fleet page.
#[derive(Debug, Clone)]
pub struct FleetRow {
    /// Name.
    pub name: String,
    /// Its page.
    pub href: String,
    /// `critical`, `warning`, `info` or `ok`.
    pub health: &'static str,
    rank: u8,
    /// Last batch, for a person.
    pub last_seen: String,
    /// Last batch, RFC 3339.
    pub last_seen_title: String,
    last_seen_ms: i64,
    /// Whether its agents have gone silent.
    pub stale: bool,
    /// Brokers.
    pub brokers: usize,
    /// Release lines.
    pub versions: String,
    /// Partitions.
    pub partitions: usize,
    /// Offline partitions.
    pub offline: usize,
    /// Under-replicated partitions.
    pub under_replicated: usize,
    /// Open alerts.
    pub open_alerts: usize,
}

/// The fleet page's filter and order.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FleetQuery {
    /// Substring of the name.
    #[serde(default)]
    pub q: String,
    /// `health` (default), `name`, `last_seen`, `partitions`, `offline`,
    /// `under_replicated` or `alerts`.
    #[serde(default)]
    pub sort: String,
}

/// The fleet page.
#[derive(Template)]
#[template(path = "console/fleet.html")]
pub struct FleetPage {
    /// Around it.
    pub layout: Layout,
    /// The filter.
    pub query: FleetQuery,
    /// Clusters shown.
    pub rows: Vec<FleetRow>,
    /// Clusters in all.
    pub total: usize,
    /// Stale clusters in all.
    pub stale: usize,
    /// Sort links: (key, label, href, current).
    pub sorts: Vec<(&'static str, &'static str, String, bool)>,
}

/// The fleet page of `clusters` with their open `alerts` at `now`.
pub fn fleet_page(
    layout: Layout,
    clusters: &[ClusterInfo],
    alerts: &[AlertView],
    now: i64,
    query: FleetQuery,
) -> FleetPage {
    let mut sev: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in alerts.iter().filter(|a| !a.alert.resolved_at(now)) {
        if let Some(c) = a.alert.labels.get("cluster") {
            sev.entry(c.as_str()).or_default().push(
                a.alert
                    .labels
                    .get("severity")
                    .map_or("warning", String::as_str),
            );
        }
    }
    let needle = query.q.trim().to_lowercase();
    let mut rows: Vec<FleetRow> = clusters
        .iter()
        .filter(|c| needle.is_empty() || c.name.to_lowercase().contains(&needle))
        .map(|c| {
            let s = sev.get(c.name.as_str());
            let (health, rank) = health_of(s.into_iter().flatten().copied());
            let mut versions: Vec<&str> = c.versions.values().map(String::as_str).collect();
            versions.sort_unstable();
            versions.dedup();
            FleetRow {
                href: format!(
                    "/clusters/{}",
                    url::form_urlencoded::byte_serialize(c.name.as_bytes()).collect::<String>()
                ),
                name: c.name.clone(),
                health,
                rank,
                last_seen: ago(now, c.last_seen_ms),
                last_seen_title: rfc3339(c.last_seen_ms),
                last_seen_ms: c.last_seen_ms,
                stale: now - c.last_seen_ms > STALE_AFTER_MS,
                brokers: c.brokers.len(),
                versions: versions.join(", "),
                partitions: c.partitions,
                offline: c.offline_partitions,
                under_replicated: c.under_replicated_partitions,
                open_alerts: s.map_or(0, Vec::len),
            }
        })
        .collect();
    let sort = if query.sort.is_empty() {
        "health"
    } else {
        query.sort.as_str()
    };
    rows.sort_by(|a, b| {
        let by = match sort {
            "name" => std::cmp::Ordering::Equal,
            "last_seen" => a.last_seen_ms.cmp(&b.last_seen_ms),
            "partitions" => b.partitions.cmp(&a.partitions),
            "offline" => b.offline.cmp(&a.offline),
            "under_replicated" => b.under_replicated.cmp(&a.under_replicated),
            "alerts" => b.open_alerts.cmp(&a.open_alerts),
            _ => (b.stale, b.rank, b.open_alerts).cmp(&(a.stale, a.rank, a.open_alerts)),
        };
        by.then_with(|| a.name.cmp(&b.name))
    });
    let stale = rows.iter().filter(|r| r.stale).count();
    let sorts = [
        ("health", "Health"),
        ("name", "Cluster"),
        ("last_seen", "Last seen"),
        ("partitions", "Partitions"),
        ("offline", "Offline"),
        ("under_replicated", "Under-replicated"),
        ("alerts", "Open alerts"),
    ]
    .into_iter()
    .map(|(k, label)| {
        let href = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &query.q)
            .append_pair("sort", k)
            .finish();
        (k, label, format!("/?{href}"), k == sort)
    })
    .collect();
    FleetPage {
        layout,
        total: clusters.len(),
        stale,
        rows,
        query,
        sorts,
    }
}

// ---------------------------------------------------------------- cluster

/// One broker on the cluster page.
#[derive(Debug, Clone)]
pub struct BrokerRow {
    /// Id.
    pub id: i32,
    /// `host:port`.
    pub endpoint: String,
    /// Rack, `–` when none.
    pub rack: String,
    /// Release line, `–` when unknown.
    pub version: String,
    /// Partitions it leads.
    pub leaders: usize,
    /// Whether it is the active controller (or quorum leader).
    pub controller: bool,
}

/// One quorum replica.
#[derive(Debug, Clone)]
pub struct QuorumRow {
    /// Replica id.
    pub id: i32,
    /// `voter` or `observer`.
    pub kind: &'static str,
    /// Whether it leads.
    pub leader: bool,
    /// Offsets behind the leader.
    pub lag: i64,
    /// Since its last fetch.
    pub last_fetch: String,
}

/// One topic.
#[derive(Debug, Clone)]
pub struct TopicRow {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: usize,
    /// Replication factor (the largest of its partitions').
    pub replication_factor: usize,
    /// `min.insync.replicas`, from the topic or else the brokers, `–` when unknown.
    pub min_isr: String,
    /// Under-replicated partitions.
    pub under_replicated: usize,
    /// Under `min.insync.replicas`.
    pub under_min_isr: usize,
    /// Offline partitions.
    pub offline: usize,
}

/// One consumer group.
#[derive(Debug, Clone)]
pub struct GroupRow {
    /// Name.
    pub name: String,
    /// Its protocol (classic, consumer, share, streams), or `–` when the agent did not
    /// say.
    pub protocol: String,
    /// State.
    pub state: String,
    /// Members, or `?` when its coordinator could not describe it (the reason follows).
    pub members: String,
    /// Why its coordinator could not describe it; empty when it could.
    pub error: String,
    /// Messages behind, over its partitions.
    pub lag: i64,
    /// Time behind, for a person.
    pub lag_time: String,
    /// Partitions it commits.
    pub partitions: usize,
}

/// One open transaction.
#[derive(Debug, Clone)]
pub struct TxnRow {
    /// `topic-partition`.
    pub partition: String,
    /// Transactional id, `–` when unknown.
    pub transactional_id: String,
    /// `producer id / epoch`.
    pub producer: String,
    /// Open for.
    pub open_for: String,
    /// `open`, `long open` or `hanging`.
    pub verdict: &'static str,
    /// Coordinator's state.
    pub coordinator_state: String,
}

/// One log dir.
#[derive(Debug, Clone)]
pub struct LogDirRow {
    /// Broker.
    pub broker: i32,
    /// Path.
    pub path: String,
    /// Used of total.
    pub usage: String,
    /// Used share, percent (0 when unknown).
    pub used_percent: u32,
    /// Replicas.
    pub replicas: usize,
    /// Error, empty when none.
    pub error: String,
}

/// A page of rows with its search and links.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    /// The rows of this page.
    pub rows: Vec<T>,
    /// Rows matching the search.
    pub matching: usize,
    /// Rows in all.
    pub total: usize,
    /// This page, from 1.
    pub page: usize,
    /// Pages.
    pub pages: usize,
    /// Previous page, empty on the first.
    pub prev: String,
    /// Next page, empty on the last.
    pub next: String,
    /// The search.
    pub q: String,
}

/// A chart: its title, unit and queries (JSON, read by `console.js`).
#[derive(Debug, Clone)]
pub struct Chart {
    /// Element id.
    pub id: &'static str,
    /// Title.
    pub title: &'static str,
    /// `[{"q": PromQL, "legend": "{label}"}]`.
    pub queries: String,
    /// Unit of the y axis (`count`, `seconds`, `ratio`, `messages`).
    pub unit: &'static str,
}

/// One alert state change.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// When, for a person.
    pub at: String,
    /// When, RFC 3339.
    pub at_title: String,
    /// `alertname`.
    pub alertname: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// Labels beside `alertname` and `cluster`.
    pub labels: String,
}

/// The cluster page's searches and pages.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ClusterQuery {
    /// Topic search.
    #[serde(default)]
    pub topic: String,
    /// Topic page, from 1.
    #[serde(default)]
    pub topic_page: Option<usize>,
    /// Group search.
    #[serde(default)]
    pub group: String,
    /// Group page, from 1.
    #[serde(default)]
    pub group_page: Option<usize>,
}

/// The cluster page.
#[derive(Template)]
#[template(path = "console/cluster.html")]
pub struct ClusterPage {
    /// Around it.
    pub layout: Layout,
    /// Name.
    pub name: String,
    /// Its own URL path.
    pub href: String,
    /// Cluster id.
    pub cluster_id: String,
    /// `critical`, `warning`, `info` or `ok`.
    pub health: &'static str,
    /// Last batch, for a person.
    pub last_seen: String,
    /// Whether its agents have gone silent.
    pub stale: bool,
    /// Shape.
    pub partitions: usize,
    /// Offline partitions.
    pub offline: usize,
    /// Under-replicated partitions.
    pub under_replicated: usize,
    /// Facts as notifications carry them.
    pub facts: Vec<(String, String)>,
    /// Brokers.
    pub brokers: Vec<BrokerRow>,
    /// Controller, as text.
    pub controller: String,
    /// The KRaft quorum.
    pub quorum: Vec<QuorumRow>,
    /// Quorum leader epoch and high watermark, as text; empty when unknown.
    pub quorum_summary: String,
    /// Topics.
    pub topics: Paged<TopicRow>,
    /// Consumer groups.
    pub groups: Paged<GroupRow>,
    /// Open transactions.
    pub transactions: Vec<TxnRow>,
    /// Log dirs.
    pub log_dirs: Vec<LogDirRow>,
    /// Open alerts.
    pub alerts: Vec<AlertCard>,
    /// Alert history, newest first.
    pub history: Vec<HistoryRow>,
    /// Plots.
    pub charts: Vec<Chart>,
    /// Time ranges the picker offers: (seconds, label).
    pub ranges: Vec<(i64, &'static str)>,
}

fn paged<T>(
    all: Vec<T>,
    total: usize,
    q: &str,
    page: Option<usize>,
    link: impl Fn(usize) -> String,
) -> Paged<T> {
    let matching = all.len();
    let pages = matching.div_ceil(PAGE_ROWS).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let rows: Vec<T> = all
        .into_iter()
        .skip((page - 1) * PAGE_ROWS)
        .take(PAGE_ROWS)
        .collect();
    Paged {
        rows,
        matching,
        total,
        page,
        pages,
        prev: if page > 1 {
            link(page - 1)
        } else {
            String::new()
        },
        next: if page < pages {
            link(page + 1)
        } else {
            String::new()
        },
        q: q.to_string(),
    }
}

/// What the cluster page reads beside the cluster itself.
#[derive(Debug, Default)]
pub struct ClusterExtras<'a> {
    /// The tenant's alerts.
    pub alerts: &'a [AlertView],
    /// The tenant's silences.
    pub silences: &'a [Silence],
    /// The cluster's alert history, newest first.
    pub history: &'a [HistoryEntry],
    /// Each group's time behind, seconds (from the agents' lag series).
    pub lag_seconds: HashMap<String, f64>,
    /// How far back the query API can chart, seconds.
    pub query_retention_secs: i64,
}

/// The cluster page of `c` at `now`.
pub fn cluster_page(
    layout: Layout,
    c: &ClusterInfo,
    extras: ClusterExtras<'_>,
    now: i64,
    query: &ClusterQuery,
) -> ClusterPage {
    let empty = foresight_proto::v1::ClusterSnapshot::default();
    let snap = c.snapshot.as_deref().unwrap_or(&empty);
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let href = format!("/clusters/{}", enc(&c.name));
    let live: std::collections::HashSet<i32> = snap.brokers.iter().map(|b| b.id).collect();
    let mut leaders: HashMap<i32, usize> = HashMap::new();
    for p in snap.topics.iter().flat_map(|t| &t.partitions) {
        *leaders.entry(p.leader).or_default() += 1;
    }
    let controller_id = snap
        .quorum
        .as_ref()
        .filter(|q| q.error_code == 0 && q.leader_id >= 0)
        .map_or(c.controller_id, |q| q.leader_id);
    let mut brokers: Vec<BrokerRow> = c
        .brokers
        .iter()
        .map(|b| BrokerRow {
            id: b.id,
            endpoint: format!("{}:{}", b.host, b.port),
            rack: if b.rack.is_empty() {
                "–".into()
            } else {
                b.rack.clone()
            },
            version: c.versions.get(&b.id).cloned().unwrap_or_else(|| "–".into()),
            leaders: leaders.get(&b.id).copied().unwrap_or(0),
            controller: b.id == controller_id,
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let controller = if controller_id >= 0 {
        format!("{controller_id}")
    } else {
        "none".into()
    };

    let (mut quorum, mut quorum_summary) = (Vec::new(), String::new());
    if let Some(q) = snap.quorum.as_ref().filter(|q| q.error_code == 0) {
        let leader_leo = q
            .voters
            .iter()
            .find(|r| r.id == q.leader_id)
            .map_or(q.high_watermark, |r| r.log_end_offset);
        quorum_summary = format!(
            "leader {} · epoch {} · high watermark {}",
            q.leader_id, q.leader_epoch, q.high_watermark
        );
        for (kind, list) in [("voter", &q.voters), ("observer", &q.observers)] {
            for r in list {
                quorum.push(QuorumRow {
                    id: r.id,
                    kind,
                    leader: r.id == q.leader_id,
                    lag: (leader_leo - r.log_end_offset).max(0),
                    last_fetch: if r.last_fetch_timestamp_ms > 0 {
                        ago(snap.collected_at_ms, r.last_fetch_timestamp_ms)
                    } else {
                        "–".into()
                    },
                });
            }
        }
    }

    // min.insync.replicas: the topic's, else the one all brokers agree on.
    let broker_min_isr: Vec<&String> = c
        .broker_configs
        .values()
        .filter_map(|m| m.get("min.insync.replicas"))
        .collect();
    let default_min_isr = match broker_min_isr.first() {
        Some(v) if broker_min_isr.iter().all(|x| x == v) => Some((*v).clone()),
        _ => None,
    };
    let tq = query.topic.trim().to_lowercase();
    let mut topics: Vec<TopicRow> = snap
        .topics
        .iter()
        .filter(|t| tq.is_empty() || t.name.to_lowercase().contains(&tq))
        .map(|t| {
            let min_isr = t
                .configs
                .get("min.insync.replicas")
                .cloned()
                .or_else(|| default_min_isr.clone());
            let min: Option<usize> = min_isr.as_deref().and_then(|v| v.parse().ok());
            TopicRow {
                name: t.name.clone(),
                partitions: t.partitions.len(),
                replication_factor: t
                    .partitions
                    .iter()
                    .map(|p| p.replicas.len())
                    .max()
                    .unwrap_or(0),
                min_isr: min_isr.unwrap_or_else(|| "–".into()),
                under_replicated: t
                    .partitions
                    .iter()
                    .filter(|p| p.isr.len() < p.replicas.len())
                    .count(),
                under_min_isr: min.map_or(0, |m| {
                    t.partitions.iter().filter(|p| p.isr.len() < m).count()
                }),
                offline: t
                    .partitions
                    .iter()
                    .filter(|p| p.leader < 0 || !live.contains(&p.leader))
                    .count(),
            }
        })
        .collect();
    topics.sort_by(|a, b| {
        (b.offline, b.under_min_isr, b.under_replicated)
            .cmp(&(a.offline, a.under_min_isr, a.under_replicated))
            .then_with(|| a.name.cmp(&b.name))
    });
    let group_q = query.group.clone();
    let topic_q = query.topic.clone();
    let topics = paged(
        topics,
        snap.topics.len(),
        &query.topic,
        query.topic_page,
        |p| {
            format!(
                "{href}?topic={}&topic_page={p}&group={}#topics",
                enc(&topic_q),
                enc(&group_q)
            )
        },
    );

    let hw = foresight_proto::derive::high_watermarks(snap);
    let gq = query.group.trim().to_lowercase();
    let mut groups: Vec<GroupRow> = snap
        .groups
        .iter()
        .filter(|g| gq.is_empty() || g.name.to_lowercase().contains(&gq))
        .map(|g| {
            let lag = g
                .offsets
                .iter()
                .filter_map(|o| {
                    hw.get(&(o.topic.as_str(), o.partition))
                        .map(|e| e.lag(o.offset))
                })
                .sum();
            GroupRow {
                name: g.name.clone(),
                protocol: match g.protocol.as_str() {
                    "" => "–".into(),
                    p => p.to_string(),
                },
                state: g.state.clone(),
                members: match g.error.as_str() {
                    "" => g.members.to_string(),
                    _ => "?".into(),
                },
                error: g.error.clone(),
                lag,
                lag_time: extras
                    .lag_seconds
                    .get(&g.name)
                    .map_or_else(|| "–".into(), |s| duration(*s)),
                partitions: g.offsets.len(),
            }
        })
        .collect();
    groups.sort_by(|a, b| b.lag.cmp(&a.lag).then_with(|| a.name.cmp(&b.name)));
    let groups = paged(
        groups,
        snap.groups.len(),
        &query.group,
        query.group_page,
        |p| {
            format!(
                "{href}?topic={}&group={}&group_page={p}#groups",
                enc(&topic_q),
                enc(&group_q)
            )
        },
    );

    let transactions = snap
        .open_transactions
        .iter()
        .map(|t| TxnRow {
            partition: format!("{}-{}", t.topic, t.partition),
            transactional_id: if t.transactional_id.is_empty() {
                "–".into()
            } else {
                t.transactional_id.clone()
            },
            producer: format!("{} / {}", t.producer_id, t.producer_epoch),
            open_for: if t.last_timestamp_ms > 0 {
                duration((snap.collected_at_ms - t.last_timestamp_ms) as f64 / 1000.0)
            } else {
                "–".into()
            },
            verdict: match t.verdict {
                2 => "long open",
                3 => "hanging",
                _ => "open",
            },
            coordinator_state: t.coordinator_state.clone(),
        })
        .collect();
    let log_dirs = c
        .log_dirs
        .iter()
        .map(|d| {
            let used = if d.total_bytes > 0 && d.usable_bytes >= 0 {
                d.total_bytes - d.usable_bytes
            } else {
                -1
            };
            LogDirRow {
                broker: d.broker,
                path: d.path.clone(),
                usage: if used >= 0 {
                    format!("{} of {}", bytes(used), bytes(d.total_bytes))
                } else {
                    format!("{} in replicas", bytes(d.replica_bytes))
                },
                used_percent: if used >= 0 {
                    (used as f64 * 100.0 / d.total_bytes as f64).round() as u32
                } else {
                    0
                },
                replicas: d.replicas,
                error: d.error.clone(),
            }
        })
        .collect();

    let mine: Vec<AlertView> = extras
        .alerts
        .iter()
        .filter(|a| a.alert.labels.get("cluster") == Some(&c.name))
        .cloned()
        .collect();
    let alerts = alert_cards(&mine, extras.silences, now);
    let (health, _) = health_of(alerts.iter().map(|a| a.severity));
    let history = extras
        .history
        .iter()
        .map(|h| HistoryRow {
            at: ago(now, h.at_ms),
            at_title: rfc3339(h.at_ms),
            alertname: h.alertname.clone(),
            state: h.state.clone(),
            labels: h
                .labels
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "cluster"))
                .map(|(k, v)| Matcher::equal(k, v).to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();

    let cl = promql_string(&c.name);
    let q = |q: String, legend: &str| serde_json::json!({"q": q, "legend": legend});
    let charts = vec![
        Chart {
            id: "chart-partitions",
            title: "Under-replicated and offline partitions",
            unit: "count",
            queries: serde_json::json!([
                q(
                    format!("sum(kafka_topic_partition_under_replicated{{cluster={cl}}})"),
                    "under-replicated"
                ),
                q(
                    format!("sum(kafka_topic_partition_offline{{cluster={cl}}})"),
                    "offline"
                ),
            ])
            .to_string(),
        },
        Chart {
            id: "chart-lag",
            title: "Consumer lag per group (messages)",
            unit: "messages",
            queries: serde_json::json!([q(
                format!(
                    "sum by (consumergroup) (kafka_consumergroup_lag_sum{{cluster={cl}}})"
                ),
                "{consumergroup}"
            )])
            .to_string(),
        },
        Chart {
            id: "chart-lag-time",
            title: "Consumer lag per group (time)",
            unit: "seconds",
            queries: serde_json::json!([q(
                format!(
                    "max by (consumergroup) (kafka_consumergroup_lag_seconds{{cluster={cl}}})"
                ),
                "{consumergroup}"
            )])
            .to_string(),
        },
        Chart {
            id: "chart-lso",
            title: "Last-stable-offset lag of transactional partitions",
            unit: "messages",
            queries: serde_json::json!([q(
                format!(
                    "topk(10, kafka_partition_last_stable_offset_lag{{cluster={cl}}} > 0)"
                ),
                "{topic}-{partition}"
            )])
            .to_string(),
        },
        Chart {
            id: "chart-disk",
            title: "Log-dir usage per broker",
            unit: "ratio",
            queries: serde_json::json!([q(
                format!(
                    "1 - kafka_log_dir_free_bytes{{cluster={cl}}} / kafka_log_dir_total_bytes{{cluster={cl}}}"
                ),
                "broker {broker} {dir}"
            )])
            .to_string(),
        },
    ];
    let ranges = [
        (900, "15 min"),
        (3600, "1 h"),
        (6 * 3600, "6 h"),
        (86_400, "24 h"),
        (7 * 86_400, "7 d"),
    ]
    .into_iter()
    .filter(|(s, _)| *s <= extras.query_retention_secs.max(900))
    .collect();

    ClusterPage {
        layout,
        name: c.name.clone(),
        href,
        cluster_id: c.cluster_id.clone(),
        health,
        last_seen: ago(now, c.last_seen_ms),
        stale: now - c.last_seen_ms > STALE_AFTER_MS,
        partitions: c.partitions,
        offline: c.offline_partitions,
        under_replicated: c.under_replicated_partitions,
        facts: c.facts().into_iter().collect(),
        brokers,
        controller,
        quorum,
        quorum_summary,
        topics,
        groups,
        transactions,
        log_dirs,
        alerts,
        history,
        charts,
        ranges,
    }
}

// ---------------------------------------------------------------- alerts

/// One aggregation group on the alerts page.
#[derive(Debug, Clone)]
pub struct AlertGroup {
    /// Receiver of its route.
    pub receiver: String,
    /// Its labels, as `name="value"`.
    pub labels: String,
    /// Its open alerts.
    pub alerts: Vec<AlertCard>,
}

/// The alerts page.
#[derive(Template)]
#[template(path = "console/alerts.html")]
pub struct AlertsPage {
    /// Around it.
    pub layout: Layout,
    /// Groups as the route tree formed them.
    pub groups: Vec<AlertGroup>,
    /// Open alerts in all.
    pub open: usize,
    /// Of which silenced.
    pub silenced: usize,
    /// Of which inhibited.
    pub inhibited: usize,
}

/// The alerts page: the open alerts in the groups the route tree formed.
pub fn alerts_page(
    layout: Layout,
    views: &[AlertView],
    silences: &[Silence],
    now: i64,
) -> AlertsPage {
    let cards: HashMap<String, AlertCard> = alert_cards(views, silences, now)
        .into_iter()
        .map(|c| (c.fingerprint.clone(), c))
        .collect();
    let mut groups: BTreeMap<(String, BTreeMap<String, String>), Vec<AlertCard>> = BTreeMap::new();
    for v in views {
        let Some(card) = cards.get(&v.alert.fingerprint) else {
            continue;
        };
        for g in &v.groups {
            groups
                .entry((g.receiver.clone(), g.labels.clone()))
                .or_default()
                .push(card.clone());
        }
    }
    let silenced = cards.values().filter(|c| c.state == "silenced").count();
    let inhibited = cards.values().filter(|c| c.state == "inhibited").count();
    AlertsPage {
        layout,
        open: cards.len(),
        silenced,
        inhibited,
        groups: groups
            .into_iter()
            .map(|((receiver, labels), alerts)| AlertGroup {
                receiver,
                labels: labels
                    .iter()
                    .map(|(k, v)| Matcher::equal(k, v).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                alerts,
            })
            .collect(),
    }
}

// ---------------------------------------------------------------- silences

/// One silence.
#[derive(Debug, Clone)]
pub struct SilenceRow {
    /// Id.
    pub id: String,
    /// `active`, `pending` or `expired`.
    pub state: String,
    /// Matchers.
    pub matchers: String,
    /// Until when, for a person.
    pub ends: String,
    /// From when, RFC 3339.
    pub starts_title: String,
    /// Until when, RFC 3339.
    pub ends_title: String,
    /// Who.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// Open alerts it mutes.
    pub muting: usize,
}

/// The silences page.
#[derive(Template)]
#[template(path = "console/silences.html")]
pub struct SilencesPage {
    /// Around it.
    pub layout: Layout,
    /// Active and pending first, then expired.
    pub silences: Vec<SilenceRow>,
}

/// The silences page.
pub fn silences_page(
    layout: Layout,
    silences: &[Silence],
    views: &[AlertView],
    now: i64,
) -> SilencesPage {
    let mut rows: Vec<SilenceRow> = silences
        .iter()
        .map(|s| SilenceRow {
            id: s.id.clone(),
            state: s.state(now).to_string(),
            matchers: s
                .matchers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            ends: if s.ends_at_ms > now {
                format!("in {}", duration((s.ends_at_ms - now) as f64 / 1000.0))
            } else {
                ago(now, s.ends_at_ms)
            },
            starts_title: rfc3339(s.starts_at_ms),
            ends_title: rfc3339(s.ends_at_ms),
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
            muting: views
                .iter()
                .filter(|v| !v.alert.resolved_at(now) && s.mutes(&v.alert.labels, now))
                .count(),
        })
        .collect();
    let rank = |s: &str| match s {
        "active" => 0,
        "pending" => 1,
        _ => 2,
    };
    rows.sort_by(|a, b| {
        rank(&a.state)
            .cmp(&rank(&b.state))
            .then_with(|| b.ends_title.cmp(&a.ends_title))
    });
    SilencesPage {
        layout,
        silences: rows,
    }
}

/// The new-silence form's fields.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SilenceForm {
    /// One matcher per line, `name="value"`, `name!="value"`, `name=~"re"`,
    /// `name!~"re"`.
    #[serde(default)]
    pub matchers: String,
    /// How long, a Prometheus duration (default `2h`).
    #[serde(default)]
    pub duration: String,
    /// Who.
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// The new-silence page, with the alerts the matchers would mute.
#[derive(Template)]
#[template(path = "console/silence_new.html")]
pub struct NewSilencePage {
    /// Around it.
    pub layout: Layout,
    /// The form as filled in.
    pub form: SilenceForm,
    /// What is wrong with it, empty when nothing.
    pub error: String,
    /// The open alerts it would mute (empty while the matchers are invalid).
    pub preview: Vec<AlertCard>,
    /// Whether the matchers parsed.
    pub valid: bool,
}

/// Parses the form's matchers as the silences API checks them.
///
/// # Errors
/// What is wrong, for a person.
pub fn form_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ms = foresight_notifier::matchers::parse_matchers(line)
            .map_err(|e| format!("{line}: {e}"))?;
        out.extend(ms);
    }
    if out.is_empty() {
        return Err("at least one matcher is required".into());
    }
    Ok(out)
}

/// The new-silence page for `form`.
pub fn new_silence_page(
    layout: Layout,
    mut form: SilenceForm,
    error: String,
    views: &[AlertView],
    now: i64,
) -> NewSilencePage {
    if form.duration.is_empty() {
        form.duration = "2h".into();
    }
    let (valid, preview) = match form_matchers(&form.matchers) {
        Ok(ms) => {
            let muted: Vec<AlertView> = views
                .iter()
                .filter(|v| foresight_notifier::matchers::all_match(&ms, &v.alert.labels))
                .cloned()
                .collect();
            (true, alert_cards(&muted, &[], now))
        }
        Err(_) => (false, Vec::new()),
    };
    NewSilencePage {
        layout,
        form,
        error,
        preview,
        valid,
    }
}

// ---------------------------------------------------------------- notifications

/// One subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    /// Id.
    pub id: String,
    /// URL.
    pub url: String,
    /// Filters, as text.
    pub filters: String,
    /// `enabled`, or why it is disabled.
    pub status: String,
    /// Failing since, empty when not failing.
    pub failing_since: String,
}

/// One delivery.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// Outbox id.
    pub id: i64,
    /// Integration.
    pub receiver: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts.
    pub attempts: u32,
    /// Last error.
    pub last_error: String,
    /// Created, for a person.
    pub created: String,
    /// Created, RFC 3339.
    pub created_title: String,
}

/// The notifications page.
#[derive(Template)]
#[template(path = "console/notifications.html")]
pub struct NotificationsPage {
    /// Around it.
    pub layout: Layout,
    /// Receivers of the route tree.
    pub receivers: Vec<String>,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionRow>,
    /// Recent deliveries, dead first.
    pub deliveries: Vec<DeliveryRow>,
}

/// The notifications page.
pub fn notifications_page(
    layout: Layout,
    receivers: Vec<String>,
    subs: &[foresight_notifier::subscription::Subscription],
    deliveries: &[crate::store::Delivery],
    now: i64,
) -> NotificationsPage {
    let list = |name: &str, v: &[String]| {
        if v.is_empty() {
            format!("{name}: any")
        } else {
            format!("{name}: {}", v.join(", "))
        }
    };
    NotificationsPage {
        layout,
        receivers,
        subscriptions: subs
            .iter()
            .map(|s| SubscriptionRow {
                id: s.id.clone(),
                url: s.url.clone(),
                filters: [
                    list("category", &s.categories),
                    list("severity", &s.severities),
                    list("cluster", &s.clusters),
                ]
                .join(" · "),
                status: s
                    .disabled_reason
                    .clone()
                    .map_or_else(|| "enabled".into(), |r| format!("disabled: {r}")),
                failing_since: s
                    .failing_since_ms
                    .map(|ms| ago(now, ms))
                    .unwrap_or_default(),
            })
            .collect(),
        deliveries: deliveries
            .iter()
            .map(|d| DeliveryRow {
                id: d.id,
                receiver: d.receiver.clone(),
                status: d.status.clone(),
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                created: ago(now, d.created_at_ms),
                created_title: rfc3339(d.created_at_ms),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------- rules

/// One rule.
#[derive(Debug, Clone)]
pub struct RuleRow {
    /// Name.
    pub name: String,
    /// `alerting` or `recording`.
    pub kind: &'static str,
    /// `inactive`, `pending` or `firing` (alerting rules).
    pub state: &'static str,
    /// The expression.
    pub expr: String,
    /// `for`, as text.
    pub for_: String,
    /// Last evaluation, for a person.
    pub last_evaluation: String,
    /// How long it took.
    pub evaluation_time: String,
    /// Last error, empty when none.
    pub last_error: String,
    /// Whether it comes from the built-in pack.
    pub pack: bool,
}

/// One rule group.
#[derive(Debug, Clone)]
pub struct RuleGroupRow {
    /// Name.
    pub name: String,
    /// File.
    pub file: String,
    /// Rules.
    pub rules: Vec<RuleRow>,
}

/// The pack options in effect.
#[derive(Debug, Clone, Default)]
pub struct PackSummary {
    /// Whether the built-in pack is loaded.
    pub builtin: bool,
    /// Rule files loaded beside it.
    pub rule_files: Vec<String>,
    /// Disabled pack rules.
    pub disabled: Vec<String>,
    /// Runbook prefix, empty when the pack's own.
    pub runbook_base_url: String,
    /// Overridden rules: name → what changed.
    pub overrides: Vec<(String, String)>,
}

/// The rules page.
#[derive(Template)]
#[template(path = "console/rules.html")]
pub struct RulesPage {
    /// Around it.
    pub layout: Layout,
    /// Groups in file order.
    pub groups: Vec<RuleGroupRow>,
    /// The pack's options.
    pub pack: PackSummary,
    /// Rules with an error at their last evaluation.
    pub failing: usize,
}

/// The rules page of `groups` with the tenant's alert states and rule health.
pub fn rules_page(
    layout: Layout,
    groups: &[foresight_rules::Group],
    saved: &[foresight_rules::SavedAlert],
    health: &HashMap<(String, String), foresight_rules::RuleHealth>,
    pack: PackSummary,
    now: i64,
) -> RulesPage {
    let mut failing = 0;
    let groups = groups
        .iter()
        .map(|g| RuleGroupRow {
            name: g.name.clone(),
            file: g.file.clone(),
            rules: g
                .rules
                .iter()
                .map(|r| {
                    let h = health.get(&(g.name.clone(), r.name.clone()));
                    let states: Vec<&str> = saved
                        .iter()
                        .filter(|a| a.group == g.name && a.rule == r.name)
                        .map(|a| a.state.as_str())
                        .collect();
                    let last_error = h.and_then(|h| h.last_error.clone()).unwrap_or_default();
                    failing += usize::from(!last_error.is_empty());
                    RuleRow {
                        name: r.name.clone(),
                        kind: if r.alerting { "alerting" } else { "recording" },
                        state: if !r.alerting {
                            ""
                        } else if states.contains(&"firing") {
                            "firing"
                        } else if states.contains(&"pending") {
                            "pending"
                        } else {
                            "inactive"
                        },
                        expr: r.expr_text.clone(),
                        for_: if r.for_.is_zero() {
                            String::new()
                        } else {
                            duration(r.for_.as_secs_f64())
                        },
                        last_evaluation: h
                            .filter(|h| h.last_evaluation_ms > 0)
                            .map_or_else(|| "not yet".into(), |h| ago(now, h.last_evaluation_ms)),
                        evaluation_time: h.map_or_else(String::new, |h| {
                            format!("{:.2} ms", h.evaluation_seconds * 1e3)
                        }),
                        last_error,
                        pack: g.file == foresight_rules::packs::KAFKA_PACK_NAME,
                    }
                })
                .collect(),
        })
        .collect();
    RulesPage {
        layout,
        groups,
        pack,
        failing,
    }
}

// ---------------------------------------------------------------- sign-in, errors

/// The sign-in page.
#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub struct SignInPage {
    /// Where to go after.
    pub next: String,
    /// Why the last try failed, empty when none.
    pub error: String,
}

/// An error page.
#[derive(Template)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    /// Title.
    pub title: String,
    /// What happened.
    pub message: String,
}
