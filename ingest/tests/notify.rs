//! Notification delivery against real receivers on loopback: an SMTP server (aiosmtpd,
//! installed by `scripts/test-deps.sh`), an HTTP server that speaks the Slack Web API,
//! and webhooks that fail; with the real SQLite store behind the outbox.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foresight_ingest::store::Store;
use foresight_notifier::outbox::RetryPolicy;
use foresight_notifier::{DeliveryWorker, Dispatcher, NotifyConfig, build_integrations};
use foresight_proto::v1::{Alert, AlertState};

fn alert(name: &str, state: AlertState, extra: &[(&str, &str)]) -> Alert {
    let mut labels = BTreeMap::from([
        ("alertname".to_string(), name.to_string()),
        ("cluster".to_string(), "prod-eu".to_string()),
        ("severity".to_string(), "critical".to_string()),
    ]);
    for (k, v) in extra {
        labels.insert((*k).into(), (*v).into());
    }
    let fingerprint = Alert::fingerprint_of(&labels);
    Alert {
        tenant: "acme".into(),
        labels,
        annotations: BTreeMap::from([
            ("summary".to_string(), format!("{name} on prod-eu")),
            (
                "description".to_string(),
                "Partition leaders are missing.".to_string(),
            ),
            (
                "runbook_url".to_string(),
                "https://runbooks.example/offline".to_string(),
            ),
        ]),
        state: state as i32,
        active_at_ms: 1_000,
        fired_at_ms: 1_000,
        resolved_at_ms: if state == AlertState::Resolved {
            2_000
        } else {
            0
        },
        fingerprint,
        ..Default::default()
    }
}

use common::now_ms;

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    dispatcher: Dispatcher<Store>,
    worker: DeliveryWorker<Store>,
}

impl Setup {
    /// The worker with the receivers' send rates of `yaml`.
    fn worker_with_limits(mut self, yaml: &str) -> Self {
        let config = NotifyConfig::from_yaml(yaml).unwrap();
        self.worker = self.worker.with_rate_limits(&config);
        self
    }
}

fn setup(yaml: &str, policy: RetryPolicy) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let config = NotifyConfig::from_yaml(yaml).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(foresight_reporter::tls::client_config(None, None).unwrap())
        .build()
        .unwrap();
    let tls = foresight_reporter::tls::client_config(None, None).unwrap();
    let integrations = build_integrations(&config, &client, &tls).unwrap();
    let worker = DeliveryWorker::new(
        store.clone(),
        integrations,
        policy,
        Arc::new(tokio::sync::Notify::new()),
    );
    let dispatcher = Dispatcher::new(store.clone(), config, "https://foresight.example".into());
    Setup {
        _dir: dir,
        store,
        dispatcher,
        worker,
    }
}

struct Smtp {
    child: std::process::Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_smtp() -> Smtp {
    start_smtp_with(&[])
}

/// aiosmtpd with extra arguments (for example `--tlscert` and `--tlskey` for STARTTLS).
fn start_smtp_with(extra: &[&std::ffi::OsStr]) -> Smtp {
    let port = common::free_port();
    let maildir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("mail"))
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m aiosmtpd (run scripts/test-deps.sh to install it)");
    // Owned at once, so that the server is stopped on every path.
    let smtp = Smtp {
        child,
        port,
        maildir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return smtp;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("aiosmtpd did not start");
}

fn mails(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(dir.join("mail").join(sub)) {
            for e in entries.flatten() {
                out.push(std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_email_per_group_notification_reaches_a_real_smtp_server() {
    let smtp = start_smtp();
    let yaml = format!(
        r#"
global:
  smtp_smarthost: 127.0.0.1:{}
  smtp_from: foresight@example.com
  smtp_require_tls: false
route:
  receiver: oncall
  group_by: [cluster]
  group_wait: 0s
receivers:
  - name: oncall
    email_configs:
      - to: oncall@example.com, sre@example.com
"#,
        smtp.port
    );
    let mut s = setup(&yaml, RetryPolicy::default());
    let now = now_ms();
    let n = s
        .dispatcher
        .dispatch(
            &[
                alert(
                    "KafkaOfflinePartitions",
                    AlertState::Firing,
                    &[("topic", "orders")],
                ),
                alert(
                    "KafkaOfflinePartitions",
                    AlertState::Firing,
                    &[("topic", "payments")],
                ),
            ],
            now,
        )
        .unwrap();
    assert_eq!(n, 1, "two alerts, one group, one email");
    assert_eq!(s.worker.deliver_due().await.unwrap(), 1);
    let got = mails(smtp.maildir.path());
    assert_eq!(got.len(), 1, "{got:?}");
    let mail = &got[0];
    assert!(
        mail.contains("Subject: [FIRING:2] KafkaOfflinePartitions (cluster prod-eu)"),
        "{mail}"
    );
    assert!(
        mail.contains("To: oncall@example.com, sre@example.com"),
        "{mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("text/html"), "{mail}");
    assert!(mail.contains("orders, payments"), "affected topics: {mail}");
    assert!(mail.contains("https://runbooks.example/offline"), "{mail}");
    // Nothing new: no second email.
    assert_eq!(s.dispatcher.dispatch(&[], now + 1000).unwrap(), 0);
    assert_eq!(s.worker.deliver_due().await.unwrap(), 0);
    drop(s.store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_starttls_verified_against_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let smtp = start_smtp_with(&[
        "--tlscert".as_ref(),
        cert.as_os_str(),
        "--tlskey".as_ref(),
        key.as_os_str(),
    ]);
    let yaml = format!(
        r#"
route:
  receiver: oncall
  group_wait: 0s
receivers:
  - name: oncall
    email_configs:
      - to: oncall@example.com
        from: foresight@example.com
        smarthost: 127.0.0.1:{}
        headers:
          Subject: '{{{{ .Alerts.Firing | len }}}} firing: {{{{ .CommonLabels.alertname }}}}'
        tls_config:
          ca_file: {}
          server_name: localhost
"#,
        smtp.port,
        cert.display()
    );
    let mut s = setup(&yaml, fast_retries(1));
    s.dispatcher
        .dispatch(
            &[alert("KafkaBrokerDown", AlertState::Firing, &[])],
            now_ms(),
        )
        .unwrap();
    s.worker.deliver_due().await.unwrap();
    assert!(s.store.dead_notifications("acme").unwrap().is_empty());
    let got = mails(smtp.maildir.path());
    assert_eq!(got.len(), 1, "delivered over STARTTLS");
    assert!(
        got[0].contains("Subject: 1 firing: KafkaBrokerDown"),
        "{}",
        got[0]
    );

    // The same server with a CA that did not sign its certificate: refused, not sent.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let wrong = certs.path().join("wrong.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let mut s = setup(
        &yaml.replace(&cert.display().to_string(), &wrong.display().to_string()),
        fast_retries(1),
    );
    s.dispatcher
        .dispatch(&[alert("KafkaDiskFull", AlertState::Firing, &[])], now_ms())
        .unwrap();
    s.worker.deliver_due().await.unwrap();
    assert_eq!(s.store.dead_notifications("acme").unwrap().len(), 1);
    assert_eq!(
        mails(smtp.maildir.path()).len(),
        1,
        "nothing sent to an unverified server"
    );
}

/// A Slack Web API stand-in: checks the bot token, records each chat.postMessage.
async fn slack_api(posts: Arc<Mutex<Vec<serde_json::Value>>>) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/api/chat.postMessage",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let posts = posts.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if auth != "Bearer xoxb-test-token" {
                        return axum::Json(
                            serde_json::json!({"ok": false, "error": "invalid_auth"}),
                        );
                    }
                    let req: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_else(|_| {
                            // Form-encoded bodies carry the fields as strings.
                            serde_json::Value::String(String::from_utf8_lossy(&body).into())
                        });
                    let n = {
                        let mut p = posts.lock().unwrap();
                        p.push(req.clone());
                        p.len()
                    };
                    let ts = format!("1700000000.00010{n}");
                    axum::Json(serde_json::json!({
                        "ok": true,
                        "channel": "C0OPS",
                        "ts": ts,
                        "message": {"ts": ts, "text": "ok", "type": "message"}
                    }))
                }
            },
        ),
    );
    common::serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_block_kit_and_the_resolution_in_the_thread() {
    let posts = Arc::new(Mutex::new(Vec::new()));
    let addr = slack_api(posts.clone()).await;
    let yaml = format!(
        r##"
route:
  receiver: slack
  group_by: [alertname, cluster]
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: slack
    slack_configs:
      - app_token: xoxb-test-token
        app_url: http://{addr}/api/
        channel: "#kafka-oncall"
        send_resolved: true
        title: '[{{{{ .Status | toUpper }}}}] {{{{ .CommonLabels.alertname }}}} in {{{{ .CommonLabels.cluster }}}}'

"##
    );
    let mut s = setup(&yaml, RetryPolicy::default());
    // Times in the past, so that what is enqueued is due for the worker at once.
    let now = now_ms() - 10_000;
    let firing = alert(
        "KafkaOfflinePartitions",
        AlertState::Firing,
        &[("topic", "orders")],
    );
    s.dispatcher
        .dispatch(std::slice::from_ref(&firing), now)
        .unwrap();
    assert_eq!(s.worker.deliver_due().await.unwrap(), 1);
    let resolved = Alert {
        state: AlertState::Resolved as i32,
        resolved_at_ms: now + 500,
        ..firing
    };
    assert_eq!(s.dispatcher.dispatch(&[resolved], now + 2000).unwrap(), 1);
    assert_eq!(s.worker.deliver_due().await.unwrap(), 1);

    let posts = posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let first = &posts[0];
    assert_eq!(first["channel"], "#kafka-oncall");
    let blocks = first["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"], "[FIRING] KafkaOfflinePartitions in prod-eu",
        "the title template, rendered over Alertmanager's data"
    );
    let text = serde_json::to_string(blocks).unwrap();
    for needle in [
        "critical",
        "prod-eu",
        "orders",
        "Partition leaders are missing",
        "runbooks.example",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert!(first.get("thread_ts").is_none());
    let second = &posts[1];
    assert_eq!(
        second["thread_ts"], "1700000000.000101",
        "the resolution answers in the thread"
    );
    assert_eq!(
        second["blocks"][0]["text"]["text"],
        "[RESOLVED] KafkaOfflinePartitions in prod-eu"
    );
}

/// A webhook that answers `statuses` in turn (then 200), counting requests per key.
async fn flaky_webhook(
    statuses: Vec<u16>,
) -> (std::net::SocketAddr, Arc<Mutex<HashMap<String, usize>>>) {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0usize));
    let seen2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let (seen, calls, statuses) = (seen2.clone(), calls.clone(), statuses.clone());
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let n = {
                    let mut c = calls.lock().unwrap();
                    *c += 1;
                    *c
                };
                let status = statuses.get(n - 1).copied().unwrap_or(200);
                if status == 200 {
                    *seen.lock().unwrap().entry(key).or_default() += 1;
                }
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let addr = common::serve(app).await;
    (addr, seen)
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        max_attempts,
    }
}

fn webhook_config(url: &str) -> String {
    format!(
        "route:\n  receiver: hook\n  group_wait: 0s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {url}\n"
    )
}

/// Backoff as in production (seconds to minutes): the worker takes the time, so the
/// tests step a clock past each retry instead of waiting for it.
fn real_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        min_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(600),
        max_attempts,
    }
}

/// Past any of the first retries `real_retries` schedules (a delay plus its jitter).
const STEP_MS: i64 = 700_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_failing_twice_gets_the_notification_exactly_once() {
    let (addr, seen) = flaky_webhook(vec![500, 500]).await;
    let mut s = setup(
        &webhook_config(&format!("http://{addr}/hook")),
        real_retries(5),
    );
    let mut t = now_ms();
    s.dispatcher
        .dispatch(&[alert("KafkaBrokerDown", AlertState::Firing, &[])], t)
        .unwrap();
    // Two failures and the success, one pass each; a pass before the retry is due
    // sends nothing.
    for attempt in 1..=3 {
        assert_eq!(
            s.worker.deliver_due_at(t).await.unwrap(),
            1,
            "attempt {attempt}"
        );
        assert_eq!(
            s.worker.deliver_due_at(t + 1).await.unwrap(),
            0,
            "attempt {attempt}"
        );
        t += STEP_MS;
    }
    // More passes deliver nothing more.
    for _ in 0..5 {
        assert_eq!(s.worker.deliver_due_at(t).await.unwrap(), 0);
        t += STEP_MS;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [1],
        "acknowledged once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_ends_dead_with_its_error() {
    // A port with nothing listening: every attempt is refused.
    let port = common::free_port();
    let mut s = setup(
        &webhook_config(&format!("http://127.0.0.1:{port}/hook")),
        real_retries(3),
    );
    let mut t = now_ms();
    s.dispatcher
        .dispatch(&[alert("KafkaBrokerDown", AlertState::Firing, &[])], t)
        .unwrap();
    for _ in 0..3 {
        assert!(s.store.dead_notifications("acme").unwrap().is_empty());
        assert_eq!(s.worker.deliver_due_at(t).await.unwrap(), 1);
        t += STEP_MS;
    }
    // Dead after the third attempt: nothing is due any more.
    assert_eq!(s.worker.deliver_due_at(t + 100 * STEP_MS).await.unwrap(), 0);
    let dead = s.store.dead_notifications("acme").unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].last_error.contains("unreachable"),
        "{:?}",
        dead[0].last_error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_silence_holds_the_alert_until_it_is_expired() {
    let (addr, seen) = flaky_webhook(vec![]).await;
    let yaml = webhook_config(&format!("http://{addr}/hook"))
        .replace("group_wait: 0s", "group_wait: 0s\n  group_interval: 1s");
    let mut s = setup(&yaml, fast_retries(3));
    let t0 = now_ms() - 60_000;
    let id = s
        .store
        .put_silence(
            "acme",
            &foresight_notifier::silence::Silence {
                id: String::new(),
                matchers: foresight_notifier::matchers::parse_matchers(
                    r#"alertname="KafkaDiskFull""#,
                )
                .unwrap(),
                starts_at_ms: t0,
                ends_at_ms: now_ms() + 3_600_000,
                created_by: "alice".into(),
                comment: "disk swap".into(),
                updated_at_ms: t0,
            },
        )
        .unwrap();
    let a = alert("KafkaDiskFull", AlertState::Firing, &[]);
    assert_eq!(
        s.dispatcher.dispatch(std::slice::from_ref(&a), t0).unwrap(),
        0,
        "silenced"
    );
    assert_eq!(
        s.dispatcher
            .dispatch(std::slice::from_ref(&a), t0 + 2_000)
            .unwrap(),
        0
    );
    s.store.expire_silence("acme", &id).unwrap();
    assert_eq!(
        s.dispatcher
            .dispatch(std::slice::from_ref(&a), t0 + 4_000)
            .unwrap(),
        1,
        "still firing when the silence ended"
    );
    s.worker.deliver_due().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_over_its_send_rate_waits_instead_of_flooding() {
    let (addr, seen) = flaky_webhook(vec![]).await;
    let yaml = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\nreceivers:\n  - name: hook\n    max_per_minute: 2\n    webhook_configs:\n      - url: http://{addr}/hook\n"
    );
    let mut s = setup(&yaml, fast_retries(3)).worker_with_limits(&yaml);
    let alerts: Vec<Alert> = ["A", "B", "C", "D"]
        .iter()
        .map(|n| alert(n, AlertState::Firing, &[]))
        .collect();
    assert_eq!(
        s.dispatcher.dispatch(&alerts, now_ms()).unwrap(),
        4,
        "four groups"
    );
    s.worker.deliver_due().await.unwrap();
    s.worker.deliver_due().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2, "two a minute");
    assert!(
        s.store.dead_notifications("acme").unwrap().is_empty(),
        "waiting is not failing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_payload_template_shapes_the_body_for_other_receivers() {
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let b = bodies.clone();
    let app = axum::Router::new().route(
        "/chat",
        axum::routing::post(move |body: axum::body::Bytes| {
            let b = b.clone();
            async move {
                b.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into());
                axum::http::StatusCode::OK
            }
        }),
    );
    let addr = common::serve(app).await;
    // The body comes from a `define` in a templates file, as Alertmanager users keep them.
    let tmpl = tempfile::tempdir().unwrap();
    std::fs::write(
        tmpl.path().join("chat.tmpl"),
        r#"{{ define "chat.body" }}{"text": "{{ .CommonLabels.alertname }}: {{ len .Alerts.Firing }} firing{{ range .Alerts }} {{ .Labels.topic }}{{ end }}"}{{ end }}"#,
    )
    .unwrap();
    let yaml = format!(
        r#"
templates: ['{}/*.tmpl']
route:
  receiver: chat
  group_by: [alertname]
  group_wait: 0s
receivers:
  - name: chat
    webhook_configs:
      - url: http://{addr}/chat
        payload: '{{{{ template "chat.body" . }}}}'
"#,
        tmpl.path().display()
    );
    let mut s = setup(&yaml, fast_retries(2));
    s.dispatcher
        .dispatch(
            &[
                alert(
                    "KafkaOfflinePartitions",
                    AlertState::Firing,
                    &[("topic", "orders")],
                ),
                alert(
                    "KafkaOfflinePartitions",
                    AlertState::Firing,
                    &[("topic", "payments")],
                ),
            ],
            now_ms(),
        )
        .unwrap();
    s.worker.deliver_due().await.unwrap();
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&got[0]).expect("the template made JSON");
    assert_eq!(
        body["text"],
        "KafkaOfflinePartitions: 2 firing orders payments"
    );
}
