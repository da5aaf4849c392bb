//! Tenant isolation across every endpoint: two tenants, keys of every scope and an
//! operator key. Each endpoint answers 401 without a key, 403 to a key whose scope does
//! not allow it, and success otherwise; another tenant's clusters, alerts, silences,
//! subscriptions, keys and series are 404 or absent. The endpoints tested are the
//! router's route table, and every one is in the OpenAPI document.

mod common;

use std::time::Duration;

use foresight_ingest::api::route::Access;
use foresight_ingest::store::Scope;
use foresight_ingest::{ServeConfig, Server};
use foresight_proto::Message;
use foresight_proto::v1::{
    Broker, ClusterSnapshot, Label, Resource, Sample, Series, TelemetryBatch,
};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Need {
    Public,
    Tenant(Scope),
    Operator,
}

use common::now_ms;

fn batch(agent: &str, seq: u64, cluster: &str, metric: &str) -> Vec<u8> {
    let now = now_ms();
    let b = TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: agent.into(),
            cluster_name: cluster.into(),
            cluster_id: format!("{cluster}-id"),
            agent_version: "0.1.0".into(),
            ..Default::default()
        }),
        sequence: seq,
        created_at_ms: now,
        series: vec![Series {
            name: metric.into(),
            labels: vec![Label {
                name: "secret_label".into(),
                value: format!("{cluster}-value"),
            }],
            samples: vec![Sample {
                timestamp_ms: now,
                value: 1.0,
            }],
        }],
        snapshot: Some(ClusterSnapshot {
            collected_at_ms: now,
            cluster_id: format!("{cluster}-id"),
            controller_id: 1,
            brokers: vec![Broker {
                id: 1,
                host: "127.0.0.1".into(),
                port: 9092,
                rack: String::new(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    zstd::bulk::compress(&b.encode_to_vec(), 3).unwrap()
}

fn remote_write() -> Vec<u8> {
    use foresight_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "rw_metric".into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: now_ms(),
            }],
        }],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

fn otlp_json() -> Vec<u8> {
    serde_json::to_vec(&json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "otlp.metric", "gauge": {"dataPoints": [
            {"timeUnixNano": (now_ms() * 1_000_000).to_string(), "asDouble": 1.0}
        ]}}
    ]}]}]}))
    .unwrap()
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&'static str, Vec<u8>, Option<&'static str>)>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some((ct, bytes, encoding)) = body {
            req = req.header("content-type", ct).body(bytes);
            if let Some(e) = encoding {
                req = req.header("content-encoding", e);
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_is_scoped_to_the_key_and_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: iso\n  rules:\n  - alert: IsoAlert\n    expr: globex_only_metric > 0\n    labels: {cluster: globex-prod}\n",
    )
    .unwrap();
    let server = Server::start(
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            evaluation_interval: "200ms".into(),
            builtin_rules: false,
            rule_files: vec![rules],
            allow_private_webhook_urls: true,
            ..ServeConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    let store = &server.store;
    let acme_ingest = store
        .create_scoped_key("acme", Scope::Ingest, "agent")
        .unwrap();
    let acme_read = store
        .create_scoped_key("acme", Scope::Read, "grafana")
        .unwrap();
    let acme_admin = store
        .create_scoped_key("acme", Scope::Admin, "ops")
        .unwrap();
    let globex_admin = store.create_scoped_key("globex", Scope::Admin, "").unwrap();
    let globex_read = store.create_scoped_key("globex", Scope::Read, "").unwrap();
    let operator = store.create_operator_key("root").unwrap();
    let api = Api {
        client: common::client(&server.fingerprint),
        base: format!("https://{}", server.addr),
    };

    // globex's data: a cluster, a firing alert, a silence, a subscription.
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/telemetry",
            Some(&globex_admin),
            Some((
                "application/x-protobuf",
                batch("g1", 1, "globex-prod", "globex_only_metric"),
                Some("zstd"),
            )),
        )
        .await;
    assert_eq!(s, 202);
    let now = jiff::Timestamp::now();
    let (_, sil) = api
        .call(
            Method::POST,
            "/api/v2/silences",
            Some(&globex_admin),
            Some((
                "application/json",
                serde_json::to_vec(&json!({
                    "matchers": [{"name": "alertname", "value": "Other", "isRegex": false}],
                    "startsAt": now.to_string(),
                    "endsAt": (now + jiff::SignedDuration::from_hours(1)).to_string(),
                    "createdBy": "g", "comment": "globex's"
                }))
                .unwrap(),
                None,
            )),
        )
        .await;
    let globex_silence = sil["silenceID"].as_str().unwrap().to_string();
    let (s, sub) = api
        .call(
            Method::POST,
            "/api/v1/subscriptions",
            Some(&globex_admin),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"url": "http://127.0.0.1:9/hook"})).unwrap(),
                None,
            )),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    let globex_sub = sub["id"].as_str().unwrap().to_string();
    let globex_key_id = globex_read[..12].to_string();
    // Wait for globex's alert to fire, so that its absence for acme means something.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = api
            .call(Method::GET, "/api/v1/alerts", Some(&globex_admin), None)
            .await;
        if v["data"]["alerts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "globex's alert never fired: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // acme's own resources, for the routes that name one: a cluster, a silence and two
    // subscriptions and two keys (one of each to delete).
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/telemetry",
            Some(&acme_ingest),
            Some((
                "application/x-protobuf",
                batch("a0", 1, "acme-prod", "acme_metric"),
                Some("zstd"),
            )),
        )
        .await;
    assert_eq!(s, 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while api
        .call(
            Method::GET,
            "/api/v1/clusters/acme-prod",
            Some(&acme_read),
            None,
        )
        .await
        .0
        != 200
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "acme's cluster never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut acme_ids = Vec::new();
    for (path, body) in [
        (
            "/api/v2/silences",
            json!({
                "matchers": [{"name": "alertname", "value": "Mine", "isRegex": false}],
                "startsAt": now.to_string(),
                "endsAt": (now + jiff::SignedDuration::from_hours(1)).to_string(),
                "createdBy": "a", "comment": "acme's"
            }),
        ),
        (
            "/api/v1/subscriptions",
            json!({"url": "http://127.0.0.1:9/kept"}),
        ),
        (
            "/api/v1/subscriptions",
            json!({"url": "http://127.0.0.1:9/deleted"}),
        ),
    ] {
        let (s, v) = api
            .call(
                Method::POST,
                path,
                Some(&acme_admin),
                Some(("application/json", serde_json::to_vec(&body).unwrap(), None)),
            )
            .await;
        assert!((200..300).contains(&s), "{path}: {s} {v}");
        acme_ids.push(
            v["silenceID"]
                .as_str()
                .or(v["id"].as_str())
                .unwrap()
                .to_string(),
        );
    }
    let [acme_silence, acme_sub, acme_sub_deleted] = <[String; 3]>::try_from(acme_ids).unwrap();
    let revoked_by_admin =
        store.create_scoped_key("acme", Scope::Read, "").unwrap()[..12].to_string();
    let revoked_by_operator =
        store.create_scoped_key("acme", Scope::Read, "").unwrap()[..12].to_string();

    // Every endpoint, with who may call it.
    type Body = Option<(&'static str, Vec<u8>, Option<&'static str>)>;
    let json_body =
        |v: Value| -> Body { Some(("application/json", serde_json::to_vec(&v).unwrap(), None)) };
    let silence = json!({
        "matchers": [{"name": "alertname", "value": "X", "isRegex": false}],
        "startsAt": now.to_string(),
        "endsAt": (now + jiff::SignedDuration::from_hours(1)).to_string(),
        "createdBy": "a", "comment": "acme's"
    });
    let mut seq = 0u64;
    type Endpoint<'a> = (Method, String, &'a str, Box<dyn FnMut() -> Body>, Need);
    let mut endpoints: Vec<Endpoint> = vec![
        (
            Method::GET,
            "/healthz".into(),
            "/healthz",
            Box::new(|| None),
            Need::Public,
        ),
        (
            Method::GET,
            "/readyz".into(),
            "/readyz",
            Box::new(|| None),
            Need::Public,
        ),
        (
            Method::GET,
            "/metrics".into(),
            "/metrics",
            Box::new(|| None),
            Need::Public,
        ),
        (
            Method::GET,
            "/openapi.json".into(),
            "/openapi.json",
            Box::new(|| None),
            Need::Public,
        ),
        (
            Method::POST,
            "/v1/telemetry".into(),
            "/v1/telemetry",
            Box::new(move || {
                seq += 1;
                Some((
                    "application/x-protobuf",
                    batch("a1", seq, "acme-prod", "acme_metric"),
                    Some("zstd"),
                ))
            }),
            Need::Tenant(Scope::Ingest),
        ),
        (
            Method::POST,
            "/v1/metrics".into(),
            "/v1/metrics",
            Box::new(|| Some(("application/json", otlp_json(), None))),
            Need::Tenant(Scope::Ingest),
        ),
        (
            Method::POST,
            "/api/v1/write".into(),
            "/api/v1/write",
            Box::new(|| Some(("application/x-protobuf", remote_write(), Some("snappy")))),
            Need::Tenant(Scope::Ingest),
        ),
        (
            Method::POST,
            "/api/v2/alerts".into(),
            "/api/v2/alerts",
            Box::new(move || {
                json_body(json!([{"labels": {"alertname": "Posted", "cluster": "acme-prod"}}]))
            }),
            Need::Tenant(Scope::Ingest),
        ),
        (
            Method::GET,
            "/api/v1/query?query=globex_only_metric".into(),
            "/api/v1/query",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::POST,
            "/api/v1/query".into(),
            "/api/v1/query",
            Box::new(|| {
                Some((
                    "application/x-www-form-urlencoded",
                    b"query=up".to_vec(),
                    None,
                ))
            }),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            format!(
                "/api/v1/query_range?query=globex_only_metric&start={}&end={}&step=15",
                now.as_second() - 300,
                now.as_second() + 60
            ),
            "/api/v1/query_range",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/series?match[]=globex_only_metric".into(),
            "/api/v1/series",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/labels".into(),
            "/api/v1/labels",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/label/secret_label/values".into(),
            "/api/v1/label/{name}/values",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/rules".into(),
            "/api/v1/rules",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/alerts".into(),
            "/api/v1/alerts",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/alerts/history".into(),
            "/api/v1/alerts/history",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/clusters".into(),
            "/api/v1/clusters",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/subscriptions".into(),
            "/api/v1/subscriptions",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/deliveries".into(),
            "/api/v1/deliveries",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v2/alerts".into(),
            "/api/v2/alerts",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v2/status".into(),
            "/api/v2/status",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v2/silences".into(),
            "/api/v2/silences",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::POST,
            "/api/v2/silences".into(),
            "/api/v2/silences",
            Box::new(move || json_body(silence.clone())),
            Need::Tenant(Scope::Admin),
        ),
        (
            Method::POST,
            "/api/v1/subscriptions".into(),
            "/api/v1/subscriptions",
            Box::new(move || json_body(json!({"url": "http://127.0.0.1:9/acme"}))),
            Need::Tenant(Scope::Admin),
        ),
        (
            Method::GET,
            "/api/v1/keys".into(),
            "/api/v1/keys",
            Box::new(|| None),
            Need::Tenant(Scope::Admin),
        ),
        (
            Method::POST,
            "/api/v1/keys".into(),
            "/api/v1/keys",
            Box::new(move || json_body(json!({"scope": "read"}))),
            Need::Tenant(Scope::Admin),
        ),
        (
            Method::GET,
            "/api/v1/tenants".into(),
            "/api/v1/tenants",
            Box::new(|| None),
            Need::Operator,
        ),
        (
            Method::POST,
            "/api/v1/tenants".into(),
            "/api/v1/tenants",
            Box::new(move || json_body(json!({"name": "initech"}))),
            Need::Operator,
        ),
        (
            Method::GET,
            "/api/v1/tenants/acme/keys".into(),
            "/api/v1/tenants/{tenant}/keys",
            Box::new(|| None),
            Need::Operator,
        ),
        (
            Method::POST,
            "/api/v1/tenants/acme/keys".into(),
            "/api/v1/tenants/{tenant}/keys",
            Box::new(move || json_body(json!({"scope": "ingest", "name": "new agent"}))),
            Need::Operator,
        ),
        (
            Method::GET,
            "/api/v1/clusters/acme-prod".into(),
            "/api/v1/clusters/{name}",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            "/api/v1/clusters/acme-prod/context".into(),
            "/api/v1/clusters/{name}/context",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::POST,
            "/api/v1/query_range".into(),
            "/api/v1/query_range",
            Box::new(move || {
                Some((
                    "application/x-www-form-urlencoded",
                    format!(
                        "query=up&start={}&end={}&step=15",
                        now.as_second() - 300,
                        now.as_second()
                    )
                    .into_bytes(),
                    None,
                ))
            }),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::POST,
            "/api/v1/series".into(),
            "/api/v1/series",
            Box::new(move || {
                Some((
                    "application/x-www-form-urlencoded",
                    b"match[]=acme_metric".to_vec(),
                    None,
                ))
            }),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::POST,
            "/api/v1/labels".into(),
            "/api/v1/labels",
            Box::new(move || {
                Some((
                    "application/x-www-form-urlencoded",
                    b"match[]=acme_metric".to_vec(),
                    None,
                ))
            }),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            format!("/api/v2/silence/{acme_silence}"),
            "/api/v2/silence/{id}",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::GET,
            format!("/api/v1/subscriptions/{acme_sub}/deliveries"),
            "/api/v1/subscriptions/{id}/deliveries",
            Box::new(|| None),
            Need::Tenant(Scope::Read),
        ),
        (
            Method::POST,
            format!("/api/v1/subscriptions/{acme_sub}/test"),
            "/api/v1/subscriptions/{id}/test",
            Box::new(|| None),
            Need::Tenant(Scope::Admin),
        ),
        // Deletions last: only the one allowed caller's call removes the thing.
        (
            Method::DELETE,
            format!("/api/v2/silence/{acme_silence}"),
            "/api/v2/silence/{id}",
            Box::new(|| None),
            Need::Tenant(Scope::Admin),
        ),
        (
            Method::DELETE,
            format!("/api/v1/subscriptions/{acme_sub_deleted}"),
            "/api/v1/subscriptions/{id}",
            Box::new(|| None),
            Need::Tenant(Scope::Admin),
        ),
        (
            Method::DELETE,
            format!("/api/v1/keys/{revoked_by_admin}"),
            "/api/v1/keys/{id}",
            Box::new(|| None),
            Need::Tenant(Scope::Admin),
        ),
        (
            Method::DELETE,
            format!("/api/v1/tenants/acme/keys/{revoked_by_operator}"),
            "/api/v1/tenants/{tenant}/keys/{id}",
            Box::new(|| None),
            Need::Operator,
        ),
    ];
    let keys: [(&str, Option<&str>, Need); 5] = [
        ("no key", None, Need::Public),
        (
            "acme ingest",
            Some(&acme_ingest),
            Need::Tenant(Scope::Ingest),
        ),
        ("acme read", Some(&acme_read), Need::Tenant(Scope::Read)),
        ("acme admin", Some(&acme_admin), Need::Tenant(Scope::Admin)),
        ("operator", Some(&operator), Need::Operator),
    ];
    // The table above is the router's own: a route added without a line here fails,
    // and so does a line whose caller differs from the access the route declares.
    let mut served: Vec<(String, String, Need)> = foresight_ingest::api::routes()
        .iter()
        .map(|r| {
            let need = match r.access {
                Access::Public => Need::Public,
                Access::Tenant(s) => Need::Tenant(s),
                Access::Operator => Need::Operator,
                Access::Console(_) => panic!(
                    "{} {}: a console route in the API's table",
                    r.method, r.path
                ),
            };
            (r.method.to_string(), r.path.to_string(), need)
        })
        .collect();
    let mut tested: Vec<(String, String, Need)> = endpoints
        .iter()
        .map(|(m, _, template, _, need)| (m.to_string(), template.to_string(), *need))
        .collect();
    served.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    tested.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        tested, served,
        "the endpoints tested are not the routes served"
    );
    let doc: Value = api.call(Method::GET, "/openapi.json", None, None).await.1;
    for (method, path, template, body, need) in &mut endpoints {
        assert!(
            doc["paths"][*template][method.as_str().to_lowercase()].is_object(),
            "{method} {template} is not in the OpenAPI document"
        );
        for (who, key, has) in &keys {
            let allowed = match (*need, *has) {
                (Need::Public, _) => true,
                (Need::Operator, Need::Operator) => true,
                // Written out, not computed by the code under test: admin may do
                // everything in its tenant, the others only their own scope.
                (Need::Tenant(_), Need::Tenant(Scope::Admin)) => true,
                (Need::Tenant(Scope::Ingest), Need::Tenant(Scope::Ingest)) => true,
                (Need::Tenant(Scope::Read), Need::Tenant(Scope::Read)) => true,
                _ => false,
            };
            let (status, resp) = api.call(method.clone(), path, *key, body()).await;
            let expected = if allowed {
                "2xx"
            } else if key.is_none() {
                "401"
            } else {
                "403"
            };
            let ok = match expected {
                "2xx" => (200..300).contains(&status),
                "401" => status == 401,
                _ => status == 403,
            };
            assert!(
                ok,
                "{method} {path} with {who}: {status}, expected {expected}: {resp}"
            );
            if !allowed && *need != Need::Public {
                assert!(
                    resp["code"].is_string() || resp["errorType"].is_string(),
                    "{method} {path} with {who}: error body {resp}"
                );
            }
        }
    }

    // globex's resources through acme's admin key: 404, never globex's data.
    let k = Some(acme_admin.as_str());
    for (method, path) in [
        (Method::GET, "/api/v1/clusters/globex-prod".to_string()),
        (Method::GET, format!("/api/v2/silence/{globex_silence}")),
        (Method::DELETE, format!("/api/v2/silence/{globex_silence}")),
        (
            Method::DELETE,
            format!("/api/v1/subscriptions/{globex_sub}"),
        ),
        (
            Method::POST,
            format!("/api/v1/subscriptions/{globex_sub}/test"),
        ),
        (
            Method::GET,
            format!("/api/v1/subscriptions/{globex_sub}/deliveries"),
        ),
        (Method::DELETE, format!("/api/v1/keys/{globex_key_id}")),
    ] {
        let (status, resp) = api.call(method.clone(), &path, k, None).await;
        assert_eq!(status, 404, "{method} {path}: {resp}");
        assert_eq!(resp["code"], "not_found", "{method} {path}: {resp}");
    }
    // Deletions and revocations by path need an operator or the owner: an acme admin's
    // DELETE of globex's key above changed nothing.
    assert!(store.authenticate(&globex_read).unwrap().is_some());
    let (_, subs) = api
        .call(
            Method::GET,
            "/api/v1/subscriptions",
            Some(&globex_admin),
            None,
        )
        .await;
    assert!(
        subs.to_string().contains(&globex_sub),
        "globex's subscription is gone: {subs}"
    );

    // Lists and queries show acme only its own.
    let globex_marks = [
        "globex",
        "IsoAlert",
        &globex_silence,
        &globex_sub,
        &globex_key_id,
    ];
    for path in [
        "/api/v1/clusters",
        "/api/v2/silences",
        "/api/v1/subscriptions",
        "/api/v2/alerts",
        "/api/v1/alerts",
        "/api/v1/alerts/history",
        "/api/v1/keys",
        "/api/v1/deliveries",
        "/api/v1/query?query=globex_only_metric",
        "/api/v1/series?match[]=globex_only_metric",
        "/api/v1/label/secret_label/values",
        "/api/v1/label/cluster/values",
    ] {
        let (status, v) = api.call(Method::GET, path, k, None).await;
        assert_eq!(status, 200, "{path}: {v}");
        let text = v.to_string();
        for m in globex_marks {
            assert!(!text.contains(m), "{path} shows acme {m:?}: {text}");
        }
    }
    // ... while globex sees them (the checks above are not vacuous).
    let g = Some(globex_admin.as_str());
    let (status, cluster) = api
        .call(Method::GET, "/api/v1/clusters/globex-prod", g, None)
        .await;
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["brokers"].as_array().unwrap().len(), 1);
    assert_eq!(cluster["open_alerts"], 1, "{cluster}");
    assert_eq!(cluster["agent_versions"], json!(["0.1.0"]));
    let (_, history) = api
        .call(
            Method::GET,
            "/api/v1/alerts/history?alertname=IsoAlert",
            g,
            None,
        )
        .await;
    assert_eq!(history[0]["state"], "firing", "{history}");
    let (_, values) = api
        .call(Method::GET, "/api/v1/label/secret_label/values", g, None)
        .await;
    assert_eq!(values["data"], json!(["globex-prod-value"]));
    let (_, q) = api
        .call(
            Method::GET,
            "/api/v1/query?query=globex_only_metric",
            g,
            None,
        )
        .await;
    assert_eq!(q["data"]["result"].as_array().unwrap().len(), 1, "{q}");

    // The operator revokes a key; it stops working at once.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/tenants/acme/keys/{}", &acme_read[..12]),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(Method::GET, "/api/v1/clusters", Some(&acme_read), None)
        .await;
    assert_eq!(status, 401);
    // A tenant admin revokes its own key.
    let (_, created) = api
        .call(
            Method::POST,
            "/api/v1/keys",
            k,
            json_body(json!({"scope": "ingest"})),
        )
        .await;
    let new_key = created["key"].as_str().unwrap().to_string();
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{}", created["id"].as_str().unwrap()),
            k,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(
            Method::POST,
            "/v1/telemetry",
            Some(&new_key),
            Some((
                "application/x-protobuf",
                batch("a9", 1, "acme-prod", "m"),
                Some("zstd"),
            )),
        )
        .await;
    assert_eq!(status, 401);
}
