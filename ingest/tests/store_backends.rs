//! The store's contracts against both backends: SQLite (one node) and PostgreSQL
//! (cluster mode's shared state, a real server from Debian's package started by
//! `foresight-testkit`). The same checks run on each.

use std::time::{Duration, Instant};

use foresight_ingest::store::pg::{self, PgStore};
use foresight_ingest::store::{
    AlertStateStore, Error, HistoryEntry, HistoryStore, Principal, Scope, SilenceStore, Store,
    SubscriptionStore, TenantStore, key_id,
};
use foresight_testkit::postgres::Postgres;

/// Tenants and scoped keys: what `keys_carry_their_scope_and_revoke_per_tenant` checks
/// on SQLite, for any backend.
fn tenants_and_keys(store: &dyn TenantStore) {
    let read = store
        .create_scoped_key("acme", Scope::Read, "grafana")
        .unwrap();
    let other = store.create_scoped_key("globex", Scope::Admin, "").unwrap();
    let op = store.create_operator_key("ops").unwrap();
    assert_eq!(
        store.authenticate_key(&read).unwrap(),
        Some(Principal::Tenant {
            id: store.ensure_tenant("acme").unwrap(),
            name: "acme".into(),
            scope: Scope::Read
        })
    );
    assert_eq!(
        store.authenticate_key(&op).unwrap(),
        Some(Principal::Operator)
    );
    assert_eq!(store.authenticate_key("fsk_unknown").unwrap(), None);
    // A key differing in its last digit shares the id but not the hash.
    let mut forged = read.clone();
    forged.replace_range(
        forged.len() - 1..,
        if read.ends_with('0') { "1" } else { "0" },
    );
    assert_eq!(store.authenticate_key(&forged).unwrap(), None);
    // Another tenant cannot revoke acme's key.
    assert!(matches!(
        store.revoke_key(Some("globex"), key_id(&read)),
        Err(Error::NotFound(_))
    ));
    store.revoke_key(Some("acme"), key_id(&read)).unwrap();
    assert_eq!(store.authenticate_key(&read).unwrap(), None);
    assert!(store.authenticate_key(&other).unwrap().is_some());
    let listed = store.keys(Some("acme")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].scope.as_str(), listed[0].name.as_str()),
        ("read", "grafana")
    );
    assert!(listed[0].revoked_at_ms.is_some());
    assert!(matches!(
        store.keys(Some("initech")),
        Err(Error::NotFound(_))
    ));
    let tenants = store.tenants().unwrap();
    let names: Vec<(&str, i64)> = tenants
        .iter()
        .map(|t| (t.name.as_str(), t.active_keys))
        .collect();
    assert_eq!(names, vec![("acme", 0), ("globex", 1)]);
    assert_eq!(store.keys(None).unwrap().len(), 1);
    store.revoke_key(None, key_id(&op)).unwrap();
    assert_eq!(store.authenticate_key(&op).unwrap(), None);
    assert!(matches!(
        store.revoke_key(None, key_id(&op)),
        Err(Error::NotFound(_))
    ));
}

/// Silences: created, replaced by id, listed newest first, expired; another tenant's
/// are neither listed nor changed.
fn silences(store: &dyn SilenceStore) {
    use foresight_notifier::matchers::Matcher;
    use foresight_notifier::silence::Silence;
    let now = foresight_proto::now_ms();
    let silence = |id: &str, alert: &str| Silence {
        id: id.into(),
        matchers: vec![
            Matcher::equal("alertname", alert),
            Matcher::regex("cluster", "prod-.*", false).unwrap(),
        ],
        starts_at_ms: now,
        ends_at_ms: now + 3_600_000,
        created_by: "ops".into(),
        comment: "maintenance".into(),
        updated_at_ms: 0,
    };
    let first = store
        .put_silence("acme", &silence("", "KafkaBrokerDown"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let second = store.put_silence("acme", &silence("", "KafkaLag")).unwrap();
    assert_ne!(first, second);
    let other = store.put_silence("globex", &silence("", "X")).unwrap();
    let listed = store.list_silences("acme").unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec![second.as_str(), first.as_str()]);
    assert_eq!(listed[1].matchers, silence("", "KafkaBrokerDown").matchers);
    // Replacing by id keeps the id; another tenant's id is not found.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        store
            .put_silence("acme", &silence(&first, "KafkaBrokerGone"))
            .unwrap(),
        first
    );
    assert!(matches!(
        store.put_silence("acme", &silence(&other, "X")),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.expire_silence("acme", &other),
        Err(Error::NotFound(_))
    ));
    let listed = store.list_silences("acme").unwrap();
    assert_eq!(listed[0].id, first);
    assert_eq!(
        listed[0].matchers[0],
        Matcher::equal("alertname", "KafkaBrokerGone")
    );
    store.expire_silence("acme", &first).unwrap();
    let expired = store
        .list_silences("acme")
        .unwrap()
        .into_iter()
        .find(|s| s.id == first)
        .unwrap();
    assert!(expired.ends_at_ms <= foresight_proto::now_ms());
    assert_eq!(expired.state(foresight_proto::now_ms()), "expired");
    assert_eq!(store.list_silences("globex").unwrap().len(), 1);
}

#[test]
fn tenants_and_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    tenants_and_keys(&Store::open(dir.path()).unwrap());
}

#[test]
fn silences_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    silences(&Store::open(dir.path()).unwrap());
    let server = Postgres::start().expect("PostgreSQL starts");
    silences(&PgStore::connect(&server.url(), 2).unwrap());
}

#[test]
fn tenants_and_keys_on_postgres() {
    let server = Postgres::start().expect("PostgreSQL starts");
    // Nodes starting together migrate once.
    let url = server.url();
    let nodes: Vec<PgStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| PgStore::connect(&url, 4).expect("a node connects")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(nodes[0].version().unwrap(), pg::VERSION);
    tenants_and_keys(&nodes[0]);
    // What one node wrote, another reads.
    let key = nodes[1]
        .create_scoped_key("initech", Scope::Ingest, "agent")
        .unwrap();
    assert!(matches!(
        nodes[2].authenticate_key(&key).unwrap(),
        Some(Principal::Tenant {
            scope: Scope::Ingest,
            ..
        })
    ));
}

#[test]
fn postgres_down_fails_cleanly_and_recovers_by_itself() {
    let server = Postgres::start().expect("PostgreSQL starts");
    let store = PgStore::connect(&server.url(), 2).unwrap();
    let key = store.create_scoped_key("acme", Scope::Admin, "").unwrap();
    assert!(store.authenticate_key(&key).unwrap().is_some());
    server.stop();
    let started = Instant::now();
    match store.authenticate_key(&key) {
        Err(Error::Postgres(m)) => assert!(!m.is_empty()),
        other => panic!("with PostgreSQL down: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the failure took {:?}",
        started.elapsed()
    );
    server.restart().expect("PostgreSQL starts again");
    // The pool replaces the broken connections on its own.
    let back = foresight_testkit::wait_until(Duration::from_secs(30), || {
        store.authenticate_key(&key).ok().flatten()
    });
    assert!(
        back.is_some(),
        "the store did not recover after the restart"
    );
}

#[test]
fn a_key_revoked_on_one_node_stops_on_the_others_within_the_cache_ttl() {
    use foresight_ingest::store::KeyCache;
    let server = Postgres::start().expect("PostgreSQL starts");
    let ttl = Duration::from_secs(2);
    let a = KeyCache::new(PgStore::connect(&server.url(), 2).unwrap(), ttl);
    let b = KeyCache::new(PgStore::connect(&server.url(), 2).unwrap(), ttl);
    let key = a.create_scoped_key("acme", Scope::Read, "").unwrap();
    // A key made on one node works on the other at once (invalid answers are not kept).
    assert!(b.authenticate_key(&key).unwrap().is_some());
    assert!(a.authenticate_key(&key).unwrap().is_some());
    a.revoke_key(Some("acme"), key_id(&key)).unwrap();
    let revoked_at = Instant::now();
    // The node that revoked it refuses it at once; the other still has it cached.
    assert_eq!(a.authenticate_key(&key).unwrap(), None);
    assert!(b.authenticate_key(&key).unwrap().is_some());
    let refused = foresight_testkit::wait_until(Duration::from_secs(10), || {
        b.authenticate_key(&key)
            .unwrap()
            .is_none()
            .then(Instant::now)
    })
    .expect("the other node refuses the revoked key");
    let after = refused - revoked_at;
    assert!(
        after <= ttl + Duration::from_millis(500),
        "refused {after:?} after the revocation"
    );
}

#[test]
fn with_postgres_down_a_key_seen_valid_stays_valid_and_others_fail_cleanly() {
    use foresight_ingest::store::KeyCache;
    let server = Postgres::start().expect("PostgreSQL starts");
    let cache = KeyCache::new(
        PgStore::connect(&server.url(), 2).unwrap(),
        Duration::from_millis(100),
    );
    let seen = cache.create_scoped_key("acme", Scope::Ingest, "").unwrap();
    let unseen = cache.create_scoped_key("acme", Scope::Ingest, "").unwrap();
    assert!(cache.authenticate_key(&seen).unwrap().is_some());
    server.stop();
    std::thread::sleep(Duration::from_millis(200));
    // Past its TTL, the seen key still authenticates while the store is down.
    assert!(matches!(
        cache.authenticate_key(&seen),
        Ok(Some(Principal::Tenant {
            scope: Scope::Ingest,
            ..
        }))
    ));
    // A key never seen is not trusted: the store's error, not a refusal.
    assert!(matches!(
        cache.authenticate_key(&unseen),
        Err(Error::Postgres(_))
    ));
    server.restart().expect("PostgreSQL starts again");
    let back = foresight_testkit::wait_until(Duration::from_secs(30), || {
        cache.authenticate_key(&unseen).ok().flatten()
    });
    assert!(
        back.is_some(),
        "the unseen key does not authenticate after the restart"
    );
}

/// A webhook receiver that counts each idempotency key it is sent.
async fn counting_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let s = s.clone();
            async move {
                let key = headers
                    .get(foresight_notifier::webhook::IDEMPOTENCY_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                *s.lock().unwrap().entry(key).or_insert(0) += 1;
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

fn worker(
    store: std::sync::Arc<PgStore>,
    url: &str,
) -> (foresight_notifier::DeliveryWorker<PgStore>, String) {
    let config = foresight_notifier::NotifyConfig::from_yaml(&format!(
        "route:\n  receiver: hook\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {url}\n"
    ))
    .unwrap();
    let tls = foresight_reporter::tls::client_config(None, None).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .build()
        .unwrap();
    let integrations = foresight_notifier::build_integrations(&config, &client, &tls).unwrap();
    let receiver = integrations.keys().next().unwrap().clone();
    (
        foresight_notifier::DeliveryWorker::new(
            store,
            integrations,
            foresight_notifier::outbox::RetryPolicy::default(),
            std::sync::Arc::new(tokio::sync::Notify::new()),
        ),
        receiver,
    )
}

/// Two notifier nodes on one PostgreSQL deliver every notification once: an entry one
/// node has taken is skipped by the other; one taken by a node that died is sent after
/// its lease by the other, with the same idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_notifier_nodes_send_each_notification_once() {
    use foresight_notifier::OutboxStore;
    use foresight_notifier::outbox::NewNotification;
    use std::sync::Arc;
    let server = tokio::task::spawn_blocking(|| Postgres::start().expect("PostgreSQL starts"))
        .await
        .unwrap();
    let url = server.url();
    let (a, b) = tokio::task::spawn_blocking(move || {
        (
            Arc::new(PgStore::connect(&url, 4).unwrap()),
            Arc::new(PgStore::connect(&url, 4).unwrap()),
        )
    })
    .await
    .unwrap();
    let (hook, seen) = counting_receiver().await;
    let (worker_a, receiver) = worker(a.clone(), &hook);
    let (worker_b, _) = worker(b.clone(), &hook);
    let now = foresight_proto::now_ms();
    let n = 200;
    let store = a.clone();
    let r = receiver.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..n {
            let fresh = store
                .enqueue(&NewNotification {
                    tenant: "acme".into(),
                    receiver: r.clone(),
                    idempotency_key: format!("acme/key-{i}"),
                    body: format!("{{\"i\":{i}}}").into_bytes(),
                    created_at_ms: now,
                })
                .unwrap();
            assert!(fresh);
        }
        // The same key again is not a second notification.
        assert!(
            !store
                .enqueue(&NewNotification {
                    tenant: "acme".into(),
                    receiver: r.clone(),
                    idempotency_key: "acme/key-0".into(),
                    body: b"{}".to_vec(),
                    created_at_ms: now,
                })
                .unwrap()
        );
    })
    .await
    .unwrap();
    // Both nodes pass over the outbox at once until it is empty.
    let pass = |w: foresight_notifier::DeliveryWorker<PgStore>| async move {
        loop {
            if w.deliver_due_at(foresight_proto::now_ms()).await.unwrap() == 0 {
                return w;
            }
        }
    };
    let (worker_a, worker_b) = tokio::join!(pass(worker_a), pass(worker_b));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), n, "every notification reached the receiver");
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
        assert!(twice.is_empty(), "sent more than once: {twice:?}");
    }
    let counts = tokio::task::spawn_blocking({
        let b = b.clone();
        move || b.outbox_counts().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(counts.get("delivered"), Some(&(n as i64)));

    // A node takes an entry and dies before sending it: the other skips it while the
    // lease holds, then sends it with its key.
    let store = a.clone();
    let r = receiver.clone();
    let taken = tokio::task::spawn_blocking(move || {
        store
            .enqueue(&NewNotification {
                tenant: "acme".into(),
                receiver: r,
                idempotency_key: "acme/orphan".into(),
                body: b"{}".to_vec(),
                created_at_ms: now,
            })
            .unwrap();
        store.due(foresight_proto::now_ms(), 10).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        worker_b
            .deliver_due_at(foresight_proto::now_ms())
            .await
            .unwrap(),
        0
    );
    let later = foresight_proto::now_ms() + pg::DELIVERY_LEASE_MS + 1;
    assert_eq!(worker_b.deliver_due_at(later).await.unwrap(), 1);
    assert_eq!(seen.lock().unwrap().get("acme/orphan"), Some(&1));
    drop(worker_a);
}

/// Alert states: what is saved for a partition comes back for it and for no other; a
/// later save replaces it; transitions do not disturb the states.
fn alert_states(store: &dyn AlertStateStore, partitioned: bool) {
    let at = foresight_proto::now_ms();
    store
        .store_alert_states(
            &[
                ("acme".into(), 1, r#"[{"a":1}]"#.into()),
                ("acme".into(), 2, r#"[{"a":2}]"#.into()),
                ("globex".into(), 1, r#"[{"g":1}]"#.into()),
            ],
            &[HistoryEntry {
                tenant: "acme".into(),
                fingerprint: "f".into(),
                alertname: "Stuck".into(),
                labels: Default::default(),
                state: "pending".into(),
                at_ms: at,
            }],
            at,
        )
        .unwrap();
    let mut all = store.load_alert_states(None).unwrap();
    all.sort();
    if partitioned {
        assert_eq!(all.len(), 3, "{all:?}");
        let mut one = store.load_alert_states(Some(&[1])).unwrap();
        one.sort();
        assert_eq!(
            one,
            vec![
                ("acme".to_string(), r#"[{"a":1}]"#.to_string()),
                ("globex".to_string(), r#"[{"g":1}]"#.to_string())
            ]
        );
        assert!(store.load_alert_states(Some(&[3])).unwrap().is_empty());
        store
            .store_alert_states(&[("acme".into(), 2, "[]".into())], &[], at)
            .unwrap();
        assert_eq!(
            store.load_alert_states(Some(&[2])).unwrap(),
            vec![("acme".to_string(), "[]".to_string())]
        );
    } else {
        // One node keeps one row per tenant: the last written.
        assert_eq!(
            all,
            vec![
                ("acme".to_string(), r#"[{"a":2}]"#.to_string()),
                ("globex".to_string(), r#"[{"g":1}]"#.to_string())
            ]
        );
    }
}

#[test]
fn alert_states_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    alert_states(&Store::open(dir.path()).unwrap(), false);
    let server = Postgres::start().expect("PostgreSQL starts");
    alert_states(&PgStore::connect(&server.url(), 2).unwrap(), true);
}

/// Subscriptions: created, listed and found per tenant, deleted; another tenant's id is
/// not found; no deliveries yet.
fn subscriptions(store: &dyn SubscriptionStore) {
    use foresight_notifier::subscription::Subscription;
    let sub = |id: &str, tenant: &str| Subscription {
        id: id.into(),
        tenant: tenant.into(),
        url: "https://hooks.example/x".into(),
        secret: "s".into(),
        categories: vec!["durability".into()],
        severities: vec![],
        clusters: vec!["prod".into()],
        failing_since_ms: None,
        disabled_reason: None,
        created_at_ms: 1,
    };
    store.create_subscription(&sub("a1", "acme")).unwrap();
    store.create_subscription(&sub("g1", "globex")).unwrap();
    let listed = store.list_subscriptions("acme").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].categories, vec!["durability".to_string()]);
    assert_eq!(listed[0].clusters, vec!["prod".to_string()]);
    assert!(store.get_subscription("acme", "a1").unwrap().is_some());
    assert!(store.get_subscription("acme", "g1").unwrap().is_none());
    assert!(matches!(
        store.delete_subscription("acme", "g1"),
        Err(Error::NotFound(_))
    ));
    assert!(
        store
            .receiver_deliveries("acme", "sub/a1", 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .status_deliveries("acme", "dead", 10)
            .unwrap()
            .is_empty()
    );
    store.delete_subscription("acme", "a1").unwrap();
    assert!(store.list_subscriptions("acme").unwrap().is_empty());
    assert_eq!(store.list_subscriptions("globex").unwrap().len(), 1);
}

#[test]
fn subscriptions_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    subscriptions(&Store::open(dir.path()).unwrap());
    let server = Postgres::start().expect("PostgreSQL starts");
    subscriptions(&PgStore::connect(&server.url(), 2).unwrap());
}

/// Alert history as the evaluator writes it, and the durability ledger: one finding
/// reported by several agents is kept once.
fn history_and_ledger<S: AlertStateStore + HistoryStore>(store: &S) {
    let at = foresight_proto::now_ms();
    let entry = |state: &str, at_ms: i64| HistoryEntry {
        tenant: "acme".into(),
        fingerprint: "f1".into(),
        alertname: "KafkaBrokerDown".into(),
        labels: [("cluster".to_string(), "prod".to_string())].into(),
        state: state.into(),
        at_ms,
    };
    store
        .store_alert_states(
            &[],
            &[entry("pending", at - 2), entry("firing", at - 1)],
            at,
        )
        .unwrap();
    let h = store
        .history("acme", Some("KafkaBrokerDown"), 0, 10)
        .unwrap();
    let states: Vec<&str> = h.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, ["firing", "pending"]);
    assert_eq!(h[0].labels["cluster"], "prod");
    assert!(store.history("globex", None, 0, 10).unwrap().is_empty());
    let event = foresight_proto::v1::Event {
        kind: foresight_proto::v1::EventKind::Durability as i32,
        timestamp_ms: at,
        message: "20 acknowledged offsets lost".into(),
        labels: [
            ("topic", "orders"),
            ("partition", "3"),
            ("previous_epoch", "4"),
            ("epoch", "5"),
            ("check", "epoch_end"),
            ("offsets_lost", "20"),
            ("clean", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    assert_eq!(
        store
            .record_durability("acme", "prod", std::slice::from_ref(&event))
            .unwrap(),
        1
    );
    // The same finding from a second agent.
    assert_eq!(
        store.record_durability("acme", "prod", &[event]).unwrap(),
        0
    );
    let l = store.ledger("acme", "prod", at, 10).unwrap();
    assert_eq!(l.windows[0].offsets_lost, 20);
    assert_eq!(l.windows[0].partitions_affected, 1);
    assert_eq!(l.windows[0].unclean_elections, 1);
    assert_eq!(l.events.len(), 1);
    assert_eq!(l.events[0].check, "epoch_end");
    assert!(
        store
            .ledger("acme", "dev", at, 10)
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn history_and_ledger_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    history_and_ledger(&Store::open(dir.path()).unwrap());
    let server = Postgres::start().expect("PostgreSQL starts");
    history_and_ledger(&PgStore::connect(&server.url(), 2).unwrap());
}
