//! Evaluates the built-in Kafka pack over a synthetic fleet, as issue 3 asks: by default
//! 200 clusters of 6 brokers, 2,000 partitions and 50 consumer groups each, with an hour
//! of 30-second samples of the series the ingest derives from the agent's snapshots
//! (`foresight_proto::derive::snapshot_series`) plus broker JMX gauges.
//!
//! Reports the append rate, the memory per active series (a counting allocator) and the
//! time of one evaluation round. Targets: a round under 1 s on one core, under 1 KiB per
//! active series with an hour retained.
//!
//! Run: `cargo bench -p foresight-rules --bench fleet`; scale down with
//! `FLEET_CLUSTERS=20` (the other sizes: `FLEET_PARTITIONS`, `FLEET_GROUPS`, `FLEET_MINUTES`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use foresight_proto::v1::{Broker, ClusterSnapshot, Partition, Series, Topic};
use foresight_rules::RuleEngine;
use foresight_rules::store::{Labels, METRIC_NAME, SeriesStore};

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One cluster's series at sample `step` (30 s apart).
fn cluster_series(
    cluster: usize,
    partitions: usize,
    groups: usize,
    step: i64,
    ts_ms: i64,
) -> Vec<Series> {
    let brokers: Vec<Broker> = (1..=6)
        .map(|id| Broker {
            id,
            host: format!("b{id}"),
            port: 9092,
            rack: String::new(),
        })
        .collect();
    let per_topic = 50;
    let topics = (0..partitions.div_ceil(per_topic))
        .map(|t| Topic {
            name: format!("topic-{t}"),
            partitions: (0..per_topic.min(partitions - t * per_topic))
                .map(|p| {
                    let leader = ((t + p) % 6 + 1) as i32;
                    let replicas = vec![leader, leader % 6 + 1, (leader + 1) % 6 + 1];
                    let hw = 1_000 * (step + 1) + p as i64;
                    // One partition in a thousand has a hung transaction.
                    let lso = if t % 20 == 0 && p == 7 { 500 } else { hw };
                    Partition {
                        id: p as i32,
                        leader,
                        isr: replicas.clone(),
                        replicas,
                        log_start_offset: Some(step),
                        high_watermark: Some(hw),
                        last_stable_offset: Some(lso),
                        error_code: 0,
                        ..Default::default()
                    }
                })
                .collect(),
            error_code: 0,
            configs: Default::default(),
        })
        .collect();
    let snap = ClusterSnapshot {
        collected_at_ms: ts_ms,
        cluster_id: format!("c{cluster}"),
        controller_id: 1,
        brokers,
        topics,
        // Groups are added below as gauges, as the measured run did.
        groups: Vec::new(),
        ..Default::default()
    };
    let base = BTreeMap::from([("cluster".to_string(), format!("c{cluster}"))]);
    let mut series = foresight_proto::derive::snapshot_series(&snap, &base, ts_ms, &|_| true);
    let mut gauge = |name: &str, labels: &[(&str, String)], value: f64| {
        let mut l: Vec<foresight_proto::v1::Label> = vec![foresight_proto::v1::Label {
            name: "cluster".into(),
            value: format!("c{cluster}"),
        }];
        l.extend(labels.iter().map(|(n, v)| foresight_proto::v1::Label {
            name: n.to_string(),
            value: v.clone(),
        }));
        series.push(Series {
            name: name.into(),
            labels: l,
            samples: vec![foresight_proto::v1::Sample {
                timestamp_ms: ts_ms,
                value,
            }],
        });
    };
    for g in 0..groups {
        for t in 0..2 {
            let lbl = [
                ("consumergroup", format!("group-{g}")),
                ("topic", format!("topic-{t}")),
            ];
            gauge("kafka_consumergroup_lag_sum", &lbl, (g * 10) as f64);
            gauge("kafka_consumergroup_lag_seconds", &lbl, g as f64);
        }
        gauge(
            "kafka_consumergroup_members",
            &[("consumergroup", format!("group-{g}"))],
            3.0,
        );
    }
    for b in 1..=6 {
        let broker = [("broker", b.to_string())];
        gauge(
            "kafka_controller_kafkacontroller_activecontrollercount",
            &broker,
            f64::from(u8::from(b == 1)),
        );
        gauge(
            "kafka_controller_kafkacontroller_offlinepartitionscount",
            &broker,
            0.0,
        );
        gauge(
            "kafka_server_replicamanager_underreplicatedpartitions",
            &broker,
            0.0,
        );
        gauge(
            "kafka_server_replicamanager_underminisrpartitioncount",
            &broker,
            0.0,
        );
        gauge(
            "kafka_server_replicamanager_partitionswithlatetransactionscount",
            &broker,
            0.0,
        );
        gauge(
            "kafka_server_replicamanager_maxlaststableoffsetlag",
            &broker,
            0.0,
        );
        gauge("kafka_server_replicamanager_isrshrinks_total", &broker, 3.0);
        gauge("kafka_server_replicamanager_isrexpands_total", &broker, 3.0);
        gauge(
            "kafka_controller_controllerstats_uncleanleaderelections_total",
            &broker,
            0.0,
        );
        gauge(
            "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent",
            &broker,
            0.7,
        );
        gauge(
            "kafka_network_socketserver_networkprocessoravgidlepercent",
            &broker,
            0.8,
        );
        let dir = [("broker", b.to_string()), ("log_dir", "/data".to_string())];
        gauge("kafka_log_dir_total_bytes", &dir, 1e12);
        gauge("kafka_log_dir_free_bytes", &dir, 6e11 - step as f64 * 1e6);
    }
    series
}

fn main() {
    if std::env::var_os("FLEET_DECODE").is_some() {
        let mut store = SeriesStore::new(i64::MAX / 4);
        let l = Labels::new([(METRIC_NAME.to_string(), "x".to_string())]);
        for i in 0..120 {
            store.append(&l, i * 30_000, (1000 * i + 7) as f64);
        }
        let series = store.series_named(Some("x")).next().unwrap();
        let mut buf = Vec::with_capacity(200);
        let started = Instant::now();
        let n = 1_000_000;
        let mut sum = 0.0;
        for _ in 0..n {
            buf.clear();
            series.range_into(i64::MIN, i64::MAX, &mut buf);
            sum += buf[119].1;
        }
        let el = started.elapsed().as_secs_f64();
        println!(
            "decode: {:.2} ns/sample ({sum})",
            el * 1e9 / (n as f64 * 120.0)
        );
        return;
    }
    let clusters = env("FLEET_CLUSTERS", 200);
    let partitions = env("FLEET_PARTITIONS", 2000);
    let groups = env("FLEET_GROUPS", 50);
    let minutes = env("FLEET_MINUTES", 60);
    let steps = (minutes * 2) as i64;
    let mut engine = RuleEngine::new(
        foresight_rules::packs::kafka().expect("pack loads"),
        BTreeMap::new(),
    );
    println!(
        "fleet: {clusters} clusters x 6 brokers, {partitions} partitions, {groups} consumer groups; {minutes} min of 30 s samples; {} rules, retention {} s",
        engine.rule_count(),
        engine.retention_ms() / 1000
    );
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut store = SeriesStore::new(engine.retention_ms().max(minutes as i64 * 60_000));
    // Label sets are built once per series, as the ingest does per batch; the timed part
    // is the append itself. Every generated value is linear in the step, so each
    // cluster's batch is built by the agent's code at steps 0 and 1 and extrapolated
    // (checked against a real step below); clusters are filled one after the other.
    let mut append_time = std::time::Duration::ZERO;
    let mut samples = 0u64;
    let prepare = |batch: Vec<Series>| -> Vec<(Labels, f64)> {
        batch
            .into_iter()
            .map(|s| {
                let labels = Labels::new(
                    s.labels
                        .into_iter()
                        .map(|l| (l.name, l.value))
                        .chain(std::iter::once((METRIC_NAME.to_string(), s.name))),
                );
                (labels, s.samples[0].value)
            })
            .collect()
    };
    for c in 0..clusters {
        let at0 = prepare(cluster_series(c, partitions, groups, 0, 0));
        let at1 = prepare(cluster_series(c, partitions, groups, 1, 30_000));
        let slopes: Vec<f64> = at0.iter().zip(&at1).map(|(a, b)| b.1 - a.1).collect();
        if c == 0 {
            let at5 = prepare(cluster_series(c, partitions, groups, 5, 150_000));
            for ((a, slope), real) in at0.iter().zip(&slopes).zip(&at5) {
                assert_eq!(a.0, real.0, "series order is stable");
                assert_eq!(a.1 + slope * 5.0, real.1, "{} is linear in the step", a.0);
            }
        }
        drop(at1);
        for step in 0..steps {
            let ts = step * 30_000;
            let started = Instant::now();
            for ((labels, v0), slope) in at0.iter().zip(&slopes) {
                store.append(labels, ts, v0 + slope * step as f64);
            }
            append_time += started.elapsed();
            samples += at0.len() as u64;
        }
    }
    let series = store.series_count();
    let bytes = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before);
    println!(
        "active series: {series}, samples stored: {}",
        store.sample_count()
    );
    println!(
        "append: {samples} samples in {:.2} s = {:.0} samples/s",
        append_time.as_secs_f64(),
        samples as f64 / append_time.as_secs_f64()
    );
    println!(
        "memory: {:.1} MiB, {:.0} bytes per active series",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / series as f64
    );
    let t_end = (steps - 1) * 30_000;
    let mut times = Vec::new();
    let mut alerts = 0;
    let rounds = env("FLEET_ROUNDS", 3).max(1);
    for _ in 0..rounds {
        let started = Instant::now();
        // Rounds 2.. re-evaluate the same instant, as a rule engine that keeps up does
        // once per scrape; the first round also creates the alerts.
        let e = engine.evaluate(&mut store, t_end, "bench");
        times.push(started.elapsed().as_secs_f64());
        alerts = e.alerts.len();
        assert!(e.errors.is_empty(), "{:?}", e.errors);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "memory after evaluation (with the evaluator's cached indexes): {:.1} MiB",
        LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before) as f64 / (1 << 20) as f64
    );
    println!(
        "evaluation round: median {:.3} s over {rounds} rounds ({alerts} alerts active)",
        times[times.len() / 2]
    );
    if std::env::var_os("FLEET_PER_RULE").is_some() {
        // Where a round's time goes, slowest rules first.
        let mut per_rule: Vec<(f64, String)> = foresight_rules::packs::kafka()
            .expect("pack loads")
            .iter()
            .flat_map(|g| g.rules.iter())
            .map(|r| {
                let started = Instant::now();
                let _ = foresight_rules::promql::Evaluator::new(&store).eval(&r.expr, t_end);
                (started.elapsed().as_secs_f64(), r.name.clone())
            })
            .collect();
        if let Ok(exprs) = std::env::var("FLEET_EXPRS") {
            for e in exprs.split(';') {
                let parsed = foresight_rules::promql::parse_supported(e).expect("parses");
                let started = Instant::now();
                let _ = foresight_rules::promql::Evaluator::new(&store).eval(&parsed, t_end);
                per_rule.push((started.elapsed().as_secs_f64(), e.to_string()));
            }
        }
        per_rule.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        for (t, name) in per_rule.iter().take(16) {
            println!("  {:>8.2} ms  {name}", t * 1000.0);
        }
    }
}
