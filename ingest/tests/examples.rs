//! The sample configurations in `examples/` load and validate.

use std::path::Path;

#[test]
fn sample_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let serve = foresight_ingest::ServeConfig::load(&root.join("foresight.yml")).unwrap();
    assert_eq!(
        serve,
        foresight_ingest::ServeConfig {
            data_dir: "/var/lib/foresight".into(),
            ..Default::default()
        }
    );
    let agent = foresight_reporter::AgentConfig::load(&root.join("agent.yml")).unwrap();
    assert_eq!(agent.kafka.cluster_name.as_deref(), Some("prod-eu-1"));
}

#[test]
fn the_sample_alertmanager_config_loads_and_routes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let text = std::fs::read_to_string(root.join("alertmanager.yml")).unwrap();
    let config = foresight_notifier::NotifyConfig::from_yaml(&text).unwrap();
    let pager = &config.receivers["pager"];
    assert_eq!(
        (
            pager.pagerduty_configs.len(),
            pager.opsgenie_configs.len(),
            config.receivers["kafka-team"].msteamsv2_configs.len(),
            config.receivers["kafka-team-email"].msteams_configs.len(),
        ),
        (1, 1, 1, 1),
        "one of each on-call receiver"
    );
    let grouper = foresight_notifier::group::Grouper::new(config, Default::default());
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    };
    assert_eq!(
        grouper.receivers_of(&labels(&[
            ("severity", "critical"),
            ("category", "availability")
        ])),
        ["pager", "kafka-team"]
    );
    assert_eq!(
        grouper.receivers_of(&labels(&[("severity", "info"), ("category", "capacity")])),
        ["kafka-team-email"]
    );
}
