//! The console over HTTP, without a browser: who may call each of its routes (the table
//! is `console::routes()` itself), the session cookie on the query API, CSRF, sign-in
//! links, revocation and safe redirects. The browser test (`console_browser.rs`) drives
//! the pages themselves.

mod common;

use foresight_ingest::api::route::Access;
use foresight_ingest::store::Scope;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

fn no_redirects(fingerprint: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            foresight_reporter::tls::client_config(None, Some(fingerprint)).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `key`; the session cookie and the page's CSRF token.
async fn sign_in(c: &reqwest::Client, base: &str, key: &str) -> (String, String) {
    let r = c
        .post(format!("{base}/sign-in"))
        .form(&[("key", key), ("next", "/alerts")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/alerts");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=",
        "Path=/",
    ] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = c
        .get(format!("{base}/alerts"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page carries a CSRF token")
        .to_string();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_route_answers_only_whom_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), None, None).await;
    let base = format!("https://{}", server.addr);
    let c = no_redirects(&server.fingerprint);
    let admin = server.store.create_key("acme").unwrap();
    let read = server
        .store
        .create_scoped_key("acme", Scope::Read, "viewer")
        .unwrap();
    let ingest = server
        .store
        .create_scoped_key("acme", Scope::Ingest, "agent")
        .unwrap();
    let operator = server.store.create_operator_key("ops").unwrap();
    let silence = server
        .store
        .put_silence(
            "acme",
            &foresight_notifier::silence::Silence {
                id: String::new(),
                matchers: vec![foresight_notifier::matchers::Matcher::equal(
                    "alertname",
                    "X",
                )],
                starts_at_ms: common::now_ms(),
                ends_at_ms: common::now_ms() + 3_600_000,
                created_by: "t".into(),
                comment: "t".into(),
                updated_at_ms: 0,
            },
        )
        .unwrap();

    let sub = foresight_notifier::subscription::Subscription {
        id: "sub1".into(),
        tenant: "acme".into(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: "s".repeat(64),
        categories: vec![],
        severities: vec![],
        clusters: vec![],
        failing_since_ms: None,
        disabled_reason: None,
        created_at_ms: common::now_ms(),
    };
    server.store.create_subscription(&sub).unwrap();

    // Ingest and operator keys cannot sign in.
    for key in [&ingest, &operator, &"fsk_nope".to_string()] {
        let r = c
            .post(format!("{base}/sign-in"))
            .form(&[("key", key.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(SET_COOKIE).is_none());
    }
    let (admin_cookie, admin_csrf) = sign_in(&c, &base, &admin).await;
    let (read_cookie, read_csrf) = sign_in(&c, &base, &read).await;

    // (method, path, form, access): the table below must be the router's own.
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, String)>,
        Access,
    );
    let cases: Vec<Case> = vec![
        ("GET", "/", vec![], Access::Console(Scope::Read)),
        ("GET", "/alerts", vec![], Access::Console(Scope::Read)),
        ("GET", "/silences", vec![], Access::Console(Scope::Read)),
        (
            "GET",
            "/notifications",
            vec![],
            Access::Console(Scope::Read),
        ),
        ("GET", "/rules", vec![], Access::Console(Scope::Read)),
        (
            "GET",
            "/silences/new",
            vec![],
            Access::Console(Scope::Admin),
        ),
        (
            "POST",
            "/silences",
            vec![
                ("matchers", "alertname=\"Y\"".into()),
                ("duration", "1h".into()),
                ("created_by", "t".into()),
                ("comment", "t".into()),
            ],
            Access::Console(Scope::Admin),
        ),
        (
            "POST",
            "/silences/expire",
            vec![("id", silence.clone())],
            Access::Console(Scope::Admin),
        ),
        (
            "POST",
            "/notifications/test",
            vec![("id", "sub1".into())],
            Access::Console(Scope::Admin),
        ),
        ("GET", "/sign-in", vec![], Access::Public),
        ("GET", "/assets/console.js", vec![], Access::Public),
    ];
    let mut served: Vec<(String, &str, Access)> = foresight_ingest::console::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path, r.access))
        .collect();
    // Sign-in, sign-out and a cluster's page are checked on their own below.
    served.retain(|(m, p, _)| {
        !matches!(
            (m.as_str(), *p),
            ("POST", "/sign-in") | ("POST", "/sign-out")
        ) && *p != "/clusters/{name}"
    });
    let tested: Vec<(String, &'static str, Access)> = cases
        .iter()
        .map(|(m, p, _, a)| (m.to_string(), *p, *a))
        .collect();
    fn path_of(p: &'static str) -> &'static str {
        if p == "/assets/console.js" {
            "/assets/{file}"
        } else {
            p
        }
    }
    let mut tested: Vec<_> = tested
        .into_iter()
        .map(|(m, p, a)| (m, path_of(p), a))
        .collect();
    served.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    tested.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(
        tested, served,
        "the console routes tested are not the routes served"
    );

    for (method, path, form, access) in &cases {
        let send = |cookie: Option<&str>, csrf: Option<&str>| {
            let mut f = form.clone();
            if let Some(t) = csrf {
                f.push(("csrf", t.to_string()));
            }
            let url = format!("{base}{path}");
            let mut rb = if *method == "GET" {
                c.get(url)
            } else {
                c.post(url).form(&f)
            };
            if let Some(k) = cookie {
                rb = rb.header(COOKIE, k);
            }
            rb.send()
        };
        let anonymous = send(None, None).await.unwrap();
        if *access == Access::Public {
            assert_eq!(anonymous.status(), StatusCode::OK, "{method} {path}");
            continue;
        }
        // No session: to sign-in (and back, for a page).
        assert_eq!(anonymous.status(), StatusCode::SEE_OTHER, "{method} {path}");
        let to = anonymous.headers()[LOCATION].to_str().unwrap().to_string();
        assert!(to.starts_with("/sign-in"), "{method} {path} → {to}");
        if *method == "GET" && *path != "/" {
            assert!(to.contains("next="), "{method} {path} → {to}");
        }
        let reader = send(Some(&read_cookie), Some(&read_csrf)).await.unwrap();
        let admin_r = send(Some(&admin_cookie), Some(&admin_csrf)).await.unwrap();
        match access {
            Access::Console(Scope::Read) => {
                assert_eq!(reader.status(), StatusCode::OK, "{method} {path} as reader");
                assert_eq!(admin_r.status(), StatusCode::OK, "{method} {path} as admin");
                let csp = admin_r.headers()["content-security-policy"]
                    .to_str()
                    .unwrap();
                assert!(csp.contains("script-src 'self'"), "{csp}");
            }
            _ => {
                assert_eq!(
                    reader.status(),
                    StatusCode::FORBIDDEN,
                    "{method} {path} as reader"
                );
                assert!(
                    admin_r.status().is_success() || admin_r.status().is_redirection(),
                    "{method} {path} as admin: {}",
                    admin_r.status()
                );
                if *method == "POST" {
                    // Without the token, or with another session's, the change is refused.
                    let forged = send(Some(&admin_cookie), None).await.unwrap();
                    assert_eq!(
                        forged.status(),
                        StatusCode::FORBIDDEN,
                        "{path} without CSRF"
                    );
                    let other = send(Some(&admin_cookie), Some(&read_csrf)).await.unwrap();
                    assert_eq!(
                        other.status(),
                        StatusCode::FORBIDDEN,
                        "{path} with another's token"
                    );
                    let cross = c
                        .post(format!("{base}{path}"))
                        .header(COOKIE, &admin_cookie)
                        .header("origin", "https://evil.example")
                        .form(&[("csrf", admin_csrf.as_str())])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        cross.status(),
                        StatusCode::FORBIDDEN,
                        "{path} from another origin"
                    );
                }
            }
        }
    }
    // The silence created above through the form is the API's too.
    let silences = server.store.list_silences("acme").unwrap();
    assert!(
        silences
            .iter()
            .any(|s| s.matchers.iter().any(|m| m.value == "Y")),
        "{silences:?}"
    );

    // The session reads the query API on GET, and changes nothing through it.
    let q = c
        .get(format!("{base}/api/v1/query?query=vector(1)"))
        .header(COOKIE, &read_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(q.status(), StatusCode::OK);
    let post = c
        .post(format!("{base}/api/v2/silences"))
        .header(COOKIE, &admin_cookie)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);

    // Another tenant's cluster page is not found (the cluster API's answer too).
    let other = c
        .get(format!("{base}/clusters/globex-prod"))
        .header(COOKIE, &admin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    // Sign-in never sends a browser elsewhere.
    for next in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let r = c
            .post(format!("{base}/sign-in"))
            .form(&[("key", read.as_str()), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()[LOCATION], "/", "next={next}");
    }

    // A sign-in link works once.
    let link = server
        .store
        .create_sign_in_link(&admin, 60_000)
        .unwrap()
        .unwrap();
    let first = c
        .get(format!("{base}/sign-in?link={link}"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert!(first.headers().get(SET_COOKIE).is_some());
    let again = c
        .get(format!("{base}/sign-in?link={link}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);

    // Sign-out ends the session; revoking the key ends the others.
    let out = c
        .post(format!("{base}/sign-out"))
        .header(COOKIE, &read_cookie)
        .form(&[("csrf", read_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = c
        .get(format!("{base}/alerts"))
        .header(COOKIE, &read_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    let id = server
        .store
        .keys(Some("acme"))
        .unwrap()
        .into_iter()
        .find(|k| k.scope == "admin")
        .unwrap()
        .id;
    server.store.revoke_key(Some("acme"), &id).unwrap();
    let revoked = c
        .get(format!("{base}/alerts"))
        .header(COOKIE, &admin_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_console_serves_only_the_apis() {
    let dir = tempfile::tempdir().unwrap();
    let config = foresight_ingest::ServeConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        builtin_rules: false,
        console: foresight_ingest::config::ConsoleConfig {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let server = foresight_ingest::Server::start(config, None).await.unwrap();
    let c = no_redirects(&server.fingerprint);
    let base = format!("https://{}", server.addr);
    for path in ["/", "/sign-in", "/assets/console.js"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
