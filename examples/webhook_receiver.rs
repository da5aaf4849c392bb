//! A minimal receiver for Foresight's signed webhooks: checks `X-Foresight-Signature`
//! and prints each notification. Run it and point a subscription or `webhook_configs`
//! at `http://127.0.0.1:9099/hook`:
//!
//! ```sh
//! FORESIGHT_WEBHOOK_SECRET=<secret> cargo run -p foresight-examples --example webhook_receiver
//! ```
//!
//! The recipe, in any language: the header is `t=<unix seconds>,v1=<hex>`; compute
//! HMAC-SHA256 with the secret over `<unix seconds>.<raw body>`, compare with `v1` in
//! constant time, and reject timestamps more than five minutes from now. Retries of one
//! notification carry the same `Idempotency-Key`: handle each key once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Checks a signature header against `body` at `now_secs`.
fn verify(secret: &[u8], header: &str, body: &[u8], now_secs: i64) -> bool {
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now_secs - t).abs() > 300 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&v1).is_ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret: Arc<[u8]> = std::env::var("FORESIGHT_WEBHOOK_SECRET")
        .map_err(|_| anyhow::anyhow!("set FORESIGHT_WEBHOOK_SECRET to the subscription's secret"))?
        .into_bytes()
        .into();
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (secret, seen) = (secret.clone(), seen.clone());
            async move {
                let header = headers
                    .get("x-foresight-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                if !verify(&secret, header, &body, now) {
                    return StatusCode::UNAUTHORIZED;
                }
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if !seen.lock().expect("lock").insert(key) {
                    return StatusCode::OK; // a retry of one already handled
                }
                println!("{}", String::from_utf8_lossy(&body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9099").await?;
    eprintln!("listening on http://127.0.0.1:9099/hook");
    axum::serve(listener, app).await?;
    Ok(())
}
