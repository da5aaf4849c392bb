//! The built-in Kafka rule pack, compiled into the binary.

use std::collections::{BTreeMap, HashSet};

use crate::Error;
use crate::rulefile::{Group, Rule, load_str, parse_duration};
use crate::template::Template;

/// Source text of `rules/packs/kafka.yml`.
pub const KAFKA_PACK: &str = include_str!("../packs/kafka.yml");

/// The pack's file name as it appears in errors and listings.
pub const KAFKA_PACK_NAME: &str = "builtin:kafka.yml";

/// Prefix of the placeholder `runbook_url` of every pack rule.
pub const RUNBOOK_PLACEHOLDER: &str = "https://foresight.example/runbooks/";

/// Loads the built-in Kafka pack.
///
/// # Errors
/// Only if the pack shipped broken, which its tests prevent.
pub fn kafka() -> Result<Vec<Group>, Error> {
    load_str(KAFKA_PACK_NAME, KAFKA_PACK)
}

/// How an operator adapts the built-in pack without copying it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackOptions {
    /// Alert names of pack rules not to run.
    pub disabled: Vec<String>,
    /// Replaces the placeholder runbook prefix in every `runbook_url`, e.g. a wiki
    /// space whose pages are named like the pack's runbooks (`kafka-missing-broker`).
    pub runbook_base_url: Option<String>,
    /// Per-rule changes keyed by alert name: `for`, `keep_firing_for`, and labels and
    /// annotations merged over the rule's own.
    pub overrides: BTreeMap<String, RuleOverride>,
}

/// Changes to one pack rule.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleOverride {
    /// New `for` duration.
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// New `keep_firing_for` duration.
    pub keep_firing_for: Option<String>,
    /// Labels set over the rule's (templates allowed; an empty value removes one).
    pub labels: BTreeMap<String, String>,
    /// Annotations set over the rule's (templates allowed).
    pub annotations: BTreeMap<String, String>,
}

impl RuleOverride {
    /// What it changes, in one line for a person.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(f) = &self.for_ {
            parts.push(format!("for {f}"));
        }
        if let Some(k) = &self.keep_firing_for {
            parts.push(format!("keep_firing_for {k}"));
        }
        for (kind, m) in [("label", &self.labels), ("annotation", &self.annotations)] {
            for (k, v) in m {
                parts.push(format!("{kind} {k}={v:?}"));
            }
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The pack adapted by `options`, with every pack rule that `user_groups` defines again
/// (an alerting or recording rule of the same name) left out, so that a rule file can
/// replace a pack rule outright.
///
/// # Errors
/// [`Error::Load`] naming each disabled or overridden rule that the pack does not have
/// and each bad override.
pub fn kafka_with(options: &PackOptions, user_groups: &[Group]) -> Result<Vec<Group>, Error> {
    let text = match &options.runbook_base_url {
        Some(base) => KAFKA_PACK.replace(RUNBOOK_PLACEHOLDER, base),
        None => KAFKA_PACK.to_string(),
    };
    let mut groups = load_str(KAFKA_PACK_NAME, &text)?;
    let known: HashSet<String> = groups
        .iter()
        .flat_map(|g| g.rules.iter().map(|r| r.name.clone()))
        .collect();
    let mut problems = Vec::new();
    for name in options.disabled.iter().chain(options.overrides.keys()) {
        if !known.contains(name) {
            problems.push(format!(
                "no rule named {name:?} in the pack (it has: {})",
                sorted(&known).join(", ")
            ));
        }
    }
    let replaced: HashSet<&str> = user_groups
        .iter()
        .flat_map(|g| g.rules.iter().map(|r| r.name.as_str()))
        .collect();
    for g in &mut groups {
        g.rules
            .retain(|r| !options.disabled.contains(&r.name) && !replaced.contains(r.name.as_str()));
        for r in &mut g.rules {
            if let Some(o) = options.overrides.get(&r.name)
                && let Err(e) = apply_override(r, o)
            {
                problems.push(format!("override of {:?}: {e}", r.name));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Load {
            file: KAFKA_PACK_NAME.into(),
            problems,
        });
    }
    groups.retain(|g| !g.rules.is_empty());
    Ok(groups)
}

fn sorted(set: &HashSet<String>) -> Vec<&str> {
    let mut v: Vec<&str> = set.iter().map(String::as_str).collect();
    v.sort_unstable();
    v
}

fn apply_override(rule: &mut Rule, o: &RuleOverride) -> Result<(), String> {
    if let Some(d) = &o.for_ {
        rule.for_ = parse_duration(d).map_err(|e| format!("for: {e}"))?;
    }
    if let Some(d) = &o.keep_firing_for {
        rule.keep_firing_for = parse_duration(d).map_err(|e| format!("keep_firing_for: {e}"))?;
    }
    let merge =
        |into: &mut Vec<(String, Template)>, from: &BTreeMap<String, String>, what: &str| {
            for (k, v) in from {
                let t = Template::parse(v).map_err(|e| format!("{what} {k:?}: {e}"))?;
                into.retain(|(n, _)| n != k);
                into.push((k.clone(), t));
            }
            into.sort_by(|a, b| a.0.cmp(&b.0));
            Ok::<(), String>(())
        };
    merge(&mut rule.labels, &o.labels, "label")?;
    merge(&mut rule.annotations, &o.annotations, "annotation")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule<'a>(groups: &'a [Group], name: &str) -> Option<&'a Rule> {
        groups
            .iter()
            .flat_map(|g| &g.rules)
            .find(|r| r.name == name)
    }

    #[test]
    fn the_pack_loads() {
        let groups = super::kafka().unwrap();
        assert!(groups.iter().map(|g| g.rules.len()).sum::<usize>() >= 20);
    }

    #[test]
    fn rules_can_be_disabled_overridden_and_replaced() {
        let user = crate::rulefile::load_str(
            "mine.yml",
            "groups:\n- name: mine\n  rules:\n  - alert: KafkaConsumerGroupLagTime\n    expr: kafka_consumergroup_lag_seconds > 60\n",
        )
        .unwrap();
        let options = PackOptions {
            disabled: vec!["KafkaMixedBrokerVersions".into()],
            runbook_base_url: Some("https://wiki.example.org/kafka/".into()),
            overrides: BTreeMap::from([(
                "KafkaBrokerCountDropped".into(),
                RuleOverride {
                    for_: Some("10m".into()),
                    labels: BTreeMap::from([("severity".into(), "warning".into())]),
                    ..Default::default()
                },
            )]),
        };
        let groups = kafka_with(&options, &user).unwrap();
        assert!(rule(&groups, "KafkaMixedBrokerVersions").is_none());
        assert!(rule(&groups, "KafkaConsumerGroupLagTime").is_none());
        let untouched = kafka_with(&PackOptions::default(), &[]).unwrap();
        assert!(rule(&untouched, "KafkaConsumerGroupLagTime").is_some());
        assert!(rule(&untouched, "KafkaMixedBrokerVersions").is_some());
        let r = rule(&groups, "KafkaBrokerCountDropped").unwrap();
        assert_eq!(r.for_, std::time::Duration::from_secs(600));
        let ctx = crate::template::Context {
            labels: &BTreeMap::new(),
            external_labels: &BTreeMap::new(),
            value: 0.0,
            query: None,
            data: None,
        };
        let get = |list: &[(String, Template)], k: &str| {
            list.iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t.render(&ctx))
        };
        assert_eq!(get(&r.labels, "severity").as_deref(), Some("warning"));
        assert_eq!(get(&r.labels, "category").as_deref(), Some("availability"));
        assert_eq!(
            get(&r.annotations, "runbook_url").as_deref(),
            Some("https://wiki.example.org/kafka/kafka-missing-broker")
        );
    }

    #[test]
    fn unknown_rule_names_are_errors_that_list_the_pack() {
        let options = PackOptions {
            disabled: vec!["KafkaNoSuchRule".into()],
            ..Default::default()
        };
        let e = kafka_with(&options, &[]).unwrap_err().to_string();
        assert!(
            e.contains("KafkaNoSuchRule") && e.contains("KafkaOfflinePartitions"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod hung_transaction {
    use std::collections::BTreeMap;

    use foresight_proto::v1::AlertState;

    use crate::RuleEngine;
    use crate::store::{Labels, SeriesStore};

    const MIN: i64 = 60_000;

    fn labels(name: &str) -> Labels {
        Labels::new([
            ("__name__".to_string(), name.to_string()),
            ("cluster".to_string(), "c".to_string()),
            ("topic".to_string(), "t".to_string()),
            ("partition".to_string(), "0".to_string()),
        ])
    }

    /// Feeds 40 minutes of 30 s scrapes from `lso_at` and `lag_at`, evaluating every
    /// 30 s; returns when KafkaHungTransaction first fired, in minutes.
    fn first_firing(lso_at: impl Fn(i64) -> f64, lag_at: impl Fn(i64) -> f64) -> Option<f64> {
        let mut engine = RuleEngine::new(super::kafka().unwrap(), BTreeMap::new());
        let mut store = SeriesStore::new(engine.retention_ms());
        for step in 0..=80 {
            let t = step * 30_000;
            store.append(&labels("kafka_partition_last_stable_offset"), t, lso_at(t));
            store.append(
                &labels("kafka_partition_last_stable_offset_lag"),
                t,
                lag_at(t),
            );
            let e = engine.evaluate(&mut store, t, "tenant");
            if e.alerts.iter().any(|a| {
                a.labels["alertname"] == "KafkaHungTransaction" && a.state() == AlertState::Firing
            }) {
                return Some(t as f64 / MIN as f64);
            }
        }
        None
    }

    #[test]
    fn a_stuck_lso_fires_after_twenty_minutes() {
        let fired = first_firing(|_| 100.0, |_| 7.0).expect("a stuck LSO must fire");
        assert!(
            (20.0..=21.0).contains(&fired),
            "fired after {fired} minutes"
        );
    }

    #[test]
    fn a_busy_transactional_partition_never_fires() {
        // Lag is above zero at every scrape, but each transaction commits within 2 min.
        let fired = first_firing(|t| (t / (2 * MIN)) as f64 * 50.0, |_| 12.0);
        assert_eq!(fired, None);
    }

    #[test]
    fn no_lag_means_no_alert_even_when_idle() {
        assert_eq!(first_firing(|_| 100.0, |_| 0.0), None);
    }
}
