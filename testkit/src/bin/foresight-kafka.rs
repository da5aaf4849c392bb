//! Starts a real KRaft cluster on loopback until Ctrl-C, for soak runs and for trying
//! the agent by hand: `scripts/kafka.sh run --brokers 3 --controllers 3`.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use foresight_testkit::{Cluster, ClusterSpec, Version};

/// A KRaft cluster of dedicated controllers and brokers, each with the jmx_exporter.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Kafka line: 4 or 3.9.
    #[arg(long, default_value = "4")]
    kafka: String,
    /// Dedicated controllers.
    #[arg(long, default_value_t = 3)]
    controllers: usize,
    /// Brokers.
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// Broker properties, KEY=VALUE, repeatable.
    #[arg(long = "broker-prop")]
    broker_props: Vec<String>,
    /// Also run Jolokia's JVM agent in every node.
    #[arg(long)]
    jolokia: bool,
    /// Controller properties, KEY=VALUE, repeatable.
    #[arg(long = "controller-prop")]
    controller_props: Vec<String>,
    /// The jmx_exporter configuration of every node [default: Foresight's own,
    /// examples/jmx_exporter/kafka.yml].
    #[arg(long = "jmx-exporter-config")]
    jmx_exporter_config: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let version = match args.kafka.as_str() {
        "4" => Version::Kafka4,
        "3.9" => Version::Kafka39,
        other => anyhow::bail!("--kafka {other}: expected 4 or 3.9"),
    };
    let mut spec = ClusterSpec::new(version).nodes(args.controllers, args.brokers);
    for p in &args.broker_props {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--broker-prop {p}: expected KEY=VALUE"))?;
        spec = spec.broker_prop(k, v);
    }
    for p in &args.controller_props {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("--controller-prop {p}: expected KEY=VALUE"))?;
        spec = spec.controller_prop(k, v);
    }
    spec.jolokia = args.jolokia;
    if let Some(config) = args.jmx_exporter_config {
        spec.jmx_exporter_config = config;
    }
    let cluster = Cluster::start(spec).context("starting the cluster")?;
    println!("cluster id: {}", cluster.cluster_id);
    println!("bootstrap.servers: {}", cluster.bootstrap());
    println!("controllers: {}", cluster.bootstrap_controllers());
    for n in &cluster.nodes {
        println!(
            "node {} ({:?}): {} jmx_exporter {}",
            n.id,
            n.role,
            n.address(),
            n.jmx_url()
        );
    }
    println!("Ctrl-C stops it.");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
