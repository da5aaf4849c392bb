//! A node that cannot start fails the cluster's start at once, with the reason its JVM
//! gave: a test that starts Kafka should not wait out the deadline and then quote a log
//! that does not hold the cause.

use foresight_testkit::{Cluster, ClusterSpec, Error, Version};

#[test]
fn a_jvm_that_exits_at_start_is_reported_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    // YAML the jmx_exporter agent refuses: the JVM exits before Kafka's main class.
    let config = dir.path().join("broken.yml");
    std::fs::write(&config, "rules: [\n  - pattern: {\n").unwrap();
    let mut spec = ClusterSpec::new(Version::Kafka4).nodes(1, 0);
    spec.heap_mib = 128;
    spec.jmx_exporter_config = config;
    match Cluster::start(spec) {
        Err(Error::Exited(report)) => {
            assert!(report.contains("node 101"), "{report}");
            assert!(report.contains("exited with exit status"), "{report}");
            // The agent's own words, from stdout.log: its failure and the YAML it refused.
            assert!(
                report.contains("cause: Failed to start Prometheus JMX Exporter"),
                "{report}"
            );
            assert!(report.contains("pattern: {"), "{report}");
        }
        Err(other) => panic!("expected the exit to be reported, got: {other}"),
        Ok(_) => panic!("a cluster started with a broken jmx_exporter configuration"),
    }
}

#[test]
fn a_missing_jmx_exporter_configuration_is_named() {
    let mut spec = ClusterSpec::new(Version::Kafka4).nodes(1, 0);
    spec.jmx_exporter_config = "/nonexistent/jmx_exporter.yml".into();
    let err = Cluster::start(spec)
        .err()
        .expect("no cluster without its configuration");
    assert!(
        err.to_string().contains("/nonexistent/jmx_exporter.yml"),
        "{err}"
    );
}
