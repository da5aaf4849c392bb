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
