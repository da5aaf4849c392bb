//! Reads that see every series of the tenant, on whichever node they arrive: the
//! Prometheus query API and the clusters API ask the node's own evaluator and every
//! other evaluator node (each pinned by the certificate fingerprint of its heartbeat)
//! and merge the answers.
//!
//! Each evaluator answers for the partitions it owns, so a query whose result is per
//! cluster (a selector, `rate`, `sum by (cluster)`) merges exactly; one that aggregates
//! across clusters on different evaluators (`sum` without `cluster`) comes back as one
//! partial result per evaluator. A node that does not answer leaves a warning in the
//! Prometheus answer (`warnings`), as a partial response, and the rest is returned.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::nodes::is_up;
use crate::store::pg::{NodeInfo, PgStore};

/// Marks a request one node asks of another: answered from the node's own data.
pub const LOCAL_HEADER: &str = "x-foresight-local";

/// Largest answer taken from a peer.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The other nodes and a pinned client for each.
pub struct Fanout {
    pg: Arc<PgStore>,
    node_id: String,
    peers: Mutex<(Option<Instant>, Vec<NodeInfo>)>,
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

impl Fanout {
    /// Fans out for the node `node_id`, learning the others from `pg`'s heartbeats.
    pub fn new(pg: Arc<PgStore>, node_id: String) -> Self {
        Fanout {
            pg,
            node_id,
            peers: Mutex::new((None, Vec::new())),
            clients: Mutex::default(),
        }
    }

    /// The other evaluator nodes that are up, read at most every 2 s.
    async fn peers(&self) -> Vec<NodeInfo> {
        {
            let p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            if p.0.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
                return p.1.clone();
            }
        }
        let pg = self.pg.clone();
        let nodes = tokio::task::spawn_blocking(move || pg.nodes())
            .await
            .ok()
            .and_then(Result::ok);
        let now = foresight_proto::now_ms();
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(nodes) = nodes {
            p.1 = nodes
                .into_iter()
                .filter(|n| {
                    n.node_id != self.node_id
                        && is_up(n.seen_at_ms, now)
                        && n.roles.iter().any(|r| r == "evaluator")
                        && !n.fingerprint.is_empty()
                })
                .collect();
        }
        // Without PostgreSQL the last list stands.
        p.0 = Some(Instant::now());
        p.1.clone()
    }

    fn client(&self, fingerprint: &str) -> Option<reqwest::Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(fingerprint) {
            return Some(c.clone());
        }
        let tls = foresight_tls::client_config(None, Some(fingerprint)).ok()?;
        let c = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(10))
            .build()
            .ok()?;
        clients.insert(fingerprint.to_string(), c.clone());
        Some(c)
    }
}

/// Whether `path` is a read that merges across nodes.
fn fans_out(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/query" | "/api/v1/query_range" | "/api/v1/series" | "/api/v1/labels"
    ) || (path.starts_with("/api/v1/label/") && path.ends_with("/values"))
        || path == "/api/v1/clusters"
        || path.starts_with("/api/v1/clusters/")
}

/// The middleware: the local answer merged with the other evaluators'.
pub async fn layer(State(f): State<Arc<Fanout>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if !fans_out(&path) || req.headers().contains_key(LOCAL_HEADER) {
        return next.run(req).await;
    }
    let peers = f.peers().await;
    if peers.is_empty() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let method = parts.method.clone();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path.clone(), |p| p.to_string());
    let mut forwarded = HeaderMap::new();
    for name in ["authorization", "cookie", "content-type", "accept"] {
        if let Some(v) = parts.headers.get(name) {
            forwarded.insert(name, v.clone());
        }
    }
    forwarded.insert(LOCAL_HEADER, HeaderValue::from_static("1"));
    let mut asked = tokio::task::JoinSet::new();
    for p in &peers {
        let client = f.client(&p.fingerprint);
        let url = format!("https://{}{path_and_query}", p.address);
        let (method, headers, body, node) = (
            method.clone(),
            forwarded.clone(),
            bytes.clone(),
            p.node_id.clone(),
        );
        asked.spawn(async move {
            let Some(client) = client else {
                return Err(format!("{node}: no client for its certificate"));
            };
            let r = client
                .request(method, &url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("{node}: {e}"))?;
            let status = r.status();
            let body = r.bytes().await.map_err(|e| format!("{node}: {e}"))?;
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| format!("{node}: answer is not JSON: {e}"))?;
            Ok((status.as_u16(), v))
        });
    }
    let local = next.run(Request::from_parts(parts, Body::from(bytes)));
    let answers = async {
        let mut out = Vec::new();
        while let Some(r) = asked.join_next().await {
            out.push(r.unwrap_or_else(|e| Err(e.to_string())));
        }
        out
    };
    let (local, remote) = tokio::join!(local, answers);
    let status = local.status();
    let (mut head, body) = local.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(local_json) = serde_json::from_slice::<Value>(&body) else {
        return Response::from_parts(head, Body::from(body));
    };
    let (status, merged) = merge(&path, (status.as_u16(), local_json), remote);
    head.status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    head.headers.remove(axum::http::header::CONTENT_LENGTH);
    (head, axum::Json(merged)).into_response()
}

/// Merges the local answer with the peers' (each `(status, JSON)` or why it failed).
pub fn merge(
    path: &str,
    local: (u16, Value),
    remote: Vec<Result<(u16, Value), String>>,
) -> (u16, Value) {
    let ok = |s: u16| (200..300).contains(&s);
    if path.starts_with("/api/v1/clusters/") {
        // One cluster lives on one evaluator: the first that knows it answers.
        if ok(local.0) {
            return local;
        }
        return remote
            .into_iter()
            .flatten()
            .find(|(s, _)| ok(*s))
            .unwrap_or(local);
    }
    if path == "/api/v1/clusters" {
        let (status, mut v) = local;
        if !ok(status) {
            return (status, v);
        }
        if let Some(all) = v.as_array_mut() {
            let mut names: BTreeSet<String> = all
                .iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect();
            for (s, r) in remote.into_iter().flatten() {
                if !ok(s) {
                    continue;
                }
                for c in r.as_array().into_iter().flatten() {
                    if let Some(n) = c["name"].as_str()
                        && names.insert(n.to_string())
                    {
                        all.push(c.clone());
                    }
                }
            }
            all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
        return (status, v);
    }
    // Prometheus' answers: `{"status": "success", "data": ...}`.
    let (status, mut v) = local;
    if v["status"] != "success" {
        return (status, v);
    }
    let mut warnings: Vec<Value> = v["warnings"].as_array().cloned().unwrap_or_default();
    for r in remote {
        match r {
            Ok((_, r)) if r["status"] == "success" => merge_data(&mut v["data"], &r["data"]),
            Ok((s, r)) => warnings.push(Value::String(format!(
                "a node answered {s}: {}",
                r["error"].as_str().unwrap_or("")
            ))),
            Err(e) => warnings.push(Value::String(format!("a node did not answer: {e}"))),
        }
    }
    if !warnings.is_empty() {
        v["warnings"] = Value::Array(warnings);
    }
    (status, v)
}

/// Adds `other`'s data to `data`: result vectors and matrices concatenate, lists of
/// series and names union.
fn merge_data(data: &mut Value, other: &Value) {
    if let (Some(kind), Some(result)) = (data["resultType"].as_str(), other["result"].as_array()) {
        if matches!(kind, "vector" | "matrix")
            && let Some(mine) = data["result"].as_array_mut()
        {
            for r in result {
                if !mine.contains(r) {
                    mine.push(r.clone());
                }
            }
        }
        return;
    }
    if let (Some(mine), Some(theirs)) = (data.as_array_mut(), other.as_array()) {
        for x in theirs {
            if !mine.contains(x) {
                mine.push(x.clone());
            }
        }
        if mine.iter().all(Value::is_string) {
            mine.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vectors_concatenate_and_failures_warn() {
        let local = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"cluster": "a"}, "value": [1, "1"]}]}});
        let remote = vec![
            Ok((
                200,
                json!({"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"cluster": "b"}, "value": [1, "2"]}]}}),
            )),
            Err("node-3: connection refused".to_string()),
        ];
        let (s, v) = merge("/api/v1/query", (200, local), remote);
        assert_eq!(s, 200);
        assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
        assert!(v["warnings"][0].as_str().unwrap().contains("node-3"));
    }

    #[test]
    fn a_bad_query_is_the_local_error() {
        let local = json!({"status": "error", "errorType": "bad_data", "error": "x"});
        let (s, v) = merge("/api/v1/query", (400, local.clone()), vec![]);
        assert_eq!((s, v), (400, local));
    }

    #[test]
    fn labels_union_sorted_and_clusters_by_name() {
        let (_, v) = merge(
            "/api/v1/labels",
            (200, json!({"status": "success", "data": ["b", "cluster"]})),
            vec![Ok((
                200,
                json!({"status": "success", "data": ["a", "cluster"]}),
            ))],
        );
        assert_eq!(v["data"], json!(["a", "b", "cluster"]));
        let (_, v) = merge(
            "/api/v1/clusters",
            (200, json!([{"name": "z"}])),
            vec![Ok((200, json!([{"name": "a"}, {"name": "z"}])))],
        );
        assert_eq!(v, json!([{"name": "a"}, {"name": "z"}]));
        let (s, v) = merge(
            "/api/v1/clusters/a",
            (404, json!({"code": "not_found"})),
            vec![Ok((200, json!({"name": "a"})))],
        );
        assert_eq!((s, v), (200, json!({"name": "a"})));
    }

    #[test]
    fn only_reads_fan_out() {
        assert!(fans_out("/api/v1/query_range"));
        assert!(fans_out("/api/v1/label/cluster/values"));
        assert!(fans_out("/api/v1/clusters/prod/context"));
        assert!(!fans_out("/api/v1/rules"));
        assert!(!fans_out("/v1/telemetry"));
        assert!(!fans_out("/api/v2/silences"));
    }
}
