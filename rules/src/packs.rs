//! The built-in Kafka rule pack, compiled into the binary.

use crate::Error;
use crate::rulefile::{Group, load_str};

/// Source text of `rules/packs/kafka.yml`.
pub const KAFKA_PACK: &str = include_str!("../packs/kafka.yml");

/// The pack's file name as it appears in errors and listings.
pub const KAFKA_PACK_NAME: &str = "builtin:kafka.yml";

/// Loads the built-in Kafka pack.
///
/// # Errors
/// Only if the pack shipped broken, which its tests prevent.
pub fn kafka() -> Result<Vec<Group>, Error> {
    load_str(KAFKA_PACK_NAME, KAFKA_PACK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pack_loads() {
        let groups = super::kafka().unwrap();
        assert!(groups.iter().map(|g| g.rules.len()).sum::<usize>() >= 20);
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
