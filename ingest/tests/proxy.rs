//! The agent reaches the ingest through the HTTPS proxy named by `HTTPS_PROXY`, as
//! hosts that may only leave through a proxy need. Its own test binary: the variable is
//! process-wide.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, IngestConfig, KafkaConfig};
use rdkafka::mocking::MockCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CONNECT proxy that records each tunnel's target and relays bytes both ways.
async fn connect_proxy(seen: Arc<Mutex<Vec<String>>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let mut words = head.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                seen.lock().unwrap().push(target.to_string());
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_go_through_the_https_proxy_from_the_environment() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = connect_proxy(seen.clone()).await;
    // SAFETY: this test binary has one test, and no other thread reads the environment
    // while it is set.
    unsafe {
        std::env::set_var("HTTPS_PROXY", format!("http://{proxy}"));
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }

    let data = tempfile::tempdir().unwrap();
    let server = common::start_plain_server(data.path(), "127.0.0.1:0").await;
    let key = server.store.create_key("acme").unwrap();
    let tenant = server.store.ensure_tenant("acme").unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let agent = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            request_timeout_ms: 2_000,
            ..KafkaConfig::default()
        },
        ingest: IngestConfig {
            url: format!("https://{}", server.addr),
            api_key: Some(key),
            pinned_sha256: Some(server.fingerprint.clone()),
            max_attempts: 1,
            timeout_secs: 5,
            ..IngestConfig::default()
        },
        ..AgentConfig::default()
    })
    .unwrap();
    assert_eq!(agent.run_once().await.unwrap(), 1);
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![server.addr.to_string()],
        "the batch went through one tunnel to the ingest"
    );
    assert_eq!(server.store.batch_sequences(tenant).unwrap().len(), 1);
    server.shutdown(Duration::from_secs(5)).await;
}
