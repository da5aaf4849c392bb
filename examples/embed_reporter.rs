//! Embeds the Foresight reporter in a service's own tokio runtime, adds a series of the
//! service's own, feeds it the statistics of the service's own Kafka producer, and prints
//! the batch it would ship.
//!
//! Run: `cargo run -p foresight-examples --example embed_reporter`
//! (against an in-process mock cluster), or set `KAFKA_BOOTSTRAP` to a real cluster.

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, KafkaConfig};
use std::sync::Arc;

use foresight_reporter::proto::v1::{Label, Sample, Series};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// The service's producer context: hands librdkafka's statistics to the reporter.
struct StatsToForesight(Arc<Reporter>);

impl ClientContext for StatsToForesight {
    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(json) = std::str::from_utf8(statistics)
            && let Err(e) = self.0.record_librdkafka_stats(json)
        {
            eprintln!("statistics not recorded: {e}");
        }
    }
}

impl ProducerContext for StatsToForesight {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Without a cluster to point at, start librdkafka's mock cluster in-process.
    let mock = match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(_) => None,
        Err(_) => {
            let m = rdkafka::mocking::MockCluster::new(1)?;
            m.create_topic("orders", 3, 1)?;
            Some(m)
        }
    };
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        mock.as_ref()
            .expect("mock started above")
            .bootstrap_servers()
    });

    let reporter = Arc::new(Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: bootstrap.clone(),
            cluster_name: Some("embedded".into()),
            ..KafkaConfig::default()
        },
        // No ingest URL: collect only. Set `ingest` to ship, and call `reporter.run(token)`.
        ..AgentConfig::default()
    })?);

    // The service's own producer, reporting its statistics every 100 ms.
    let producer: BaseProducer<StatsToForesight> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("client.id", "orders-service")
        .set("statistics.interval.ms", "100")
        .create_with_context(StatsToForesight(reporter.clone()))?;
    for _ in 0..5 {
        producer.poll(std::time::Duration::from_millis(100));
    }
    let _ = producer.flush(std::time::Duration::from_secs(1));

    // The service's own metric, shipped alongside the cluster's.
    reporter.add_series([Series {
        name: "orders_service_pending_orders".into(),
        labels: vec![Label {
            name: "cluster".into(),
            value: "embedded".into(),
        }],
        samples: vec![Sample {
            timestamp_ms: 0,
            value: 42.0,
        }],
    }]);

    let batch = reporter.collect_batch().await?;
    println!("{} series, e.g.:", batch.series.len());
    for s in batch
        .series
        .iter()
        .filter(|s| {
            s.name.contains("offline")
                || s.name.starts_with("orders_")
                || s.name == "librdkafka_broker_rtt_avg_seconds"
        })
        .take(6)
    {
        println!(
            "  {} {:?} = {}",
            s.name,
            s.labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>(),
            s.samples[0].value
        );
    }
    Ok(())
}
