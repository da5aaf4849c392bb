//! The Foresight ingest service as a library: the HTTPS API, the store, the evaluator
//! pipeline and their wiring; `main.rs` is only the command line.
//!
//! Data flows one way: [`api`] hands batches, posted alerts and queries to the
//! [`evaluator`] and reads what it publishes ([`evaluator::views`]); both use the
//! [`store`]; none of them imports the one above it.
//!
//! - [`config`]: `foresight serve` configuration.
//! - [`api`]: the route table, authentication extractors, errors and the endpoints.
//! - [`decode`]: the decoders of untrusted bodies (the `foresight-decode` crate).
//! - [`evaluator`]: series stores, rule evaluation, dispatch, and the read models.
//! - [`store`]: SQLite state (tenants, keys, batches, outbox).
//! - [`context`]: a cluster's support context as Markdown.
//! - [`tls`]: the server certificate, generated when not configured.
//! - `demo` (the default `demo` feature): the whole pipeline in one process against
//!   librdkafka's mock cluster; without the feature the service links neither the agent
//!   nor librdkafka.
#![warn(missing_docs)]

pub mod api;
pub mod cluster;
pub mod config;
pub mod console;
pub mod context;
#[cfg(feature = "demo")]
pub mod demo;
mod error;
pub mod evaluator;
pub mod metrics;
pub mod store;

pub use foresight_decode as decode;
pub use foresight_tls as tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foresight_notifier::outbox::{PendingNotification, RetryPolicy};
use foresight_notifier::{DeliveryWorker, Dispatcher};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Reads waiting for the evaluator (query API, cluster context); past it a reader waits,
/// and after 30 s is told the evaluator is busy. Batches have their own queue.
const QUERY_QUEUE: usize = 64;

pub use config::ServeConfig;
pub use error::Error;
pub use store::Store;

use foresight_proto::now_ms;

/// Loads the configured rule groups: the built-in pack (unless disabled) then the files.
///
/// # Errors
/// [`Error::Rules`] for the first file that does not load.
pub fn load_rules(config: &ServeConfig) -> Result<Vec<foresight_rules::Group>, Error> {
    let mut user = Vec::new();
    for f in &config.rule_files {
        user.extend(foresight_rules::load_file(f)?);
    }
    let mut groups = Vec::new();
    if config.builtin_rules {
        groups.extend(foresight_rules::packs::kafka_with(&config.pack, &user)?);
    }
    groups.extend(user);
    Ok(groups)
}

/// The TLS configuration (the system's roots, read once) and the HTTP client built on
/// it that webhooks, Slack and the on-call receivers share.
///
/// # Errors
/// Why the roots could not be read or the client built.
pub fn receiver_clients() -> Result<(rustls::ClientConfig, reqwest::Client), String> {
    let tls = foresight_tls::client_config(None, None).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .build()
        .map_err(|e| e.to_string())?;
    Ok((tls, client))
}

/// A running service.
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    /// SHA-256 fingerprint of the server certificate.
    pub fingerprint: String,
    /// Whether the certificate was generated at this start.
    pub generated_certificate: bool,
    /// The store.
    pub store: Arc<Store>,
    /// The listener, the evaluator and the delivery worker, in the order shutdown stops
    /// them, each with the token that tells it to finish.
    stages: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
    shutdown_timeout: Duration,
}

/// Called after each delivery a receiver acknowledged.
pub type DeliveredHook = Arc<dyn Fn(&PendingNotification) + Send + Sync>;

impl Server {
    /// Opens the store, loads rules and the certificate, binds, and starts the
    /// listener, the evaluator and the delivery worker.
    ///
    /// # Errors
    /// [`Error`] for anything that stops the service from starting.
    pub async fn start(
        config: ServeConfig,
        on_delivered: Option<DeliveredHook>,
    ) -> Result<Server, Error> {
        config.validate().map_err(Error::Config)?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::Io(format!("data_dir {}: {e}", config.data_dir.display())))?;
        let store = Arc::new(Store::open(&config.data_dir)?);
        let groups = load_rules(&config)?;
        let identity = tls::load_or_generate(
            config.tls.cert_file.as_deref(),
            config.tls.key_file.as_deref(),
            &config.data_dir,
        )?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Io(format!("listen {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Io(e.to_string()))?;

        let (http_cancel, pipeline_cancel, worker_cancel) = (
            CancellationToken::new(),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let wake = Arc::new(Notify::new());
        let (tls, client) = receiver_clients().map_err(Error::Io)?;
        let notify = config.notify_config().map_err(|e| Error::Config(vec![e]))?;
        let receivers = foresight_notifier::build_integrations(&notify, &client, &tls)
            .map_err(Error::Config)?;
        let cluster = match &config.cluster {
            Some(c) => Some(cluster::Node::connect(c, &config.listen).await?),
            None => None,
        };
        let worker = match &cluster {
            Some(node) if !node.config.runs(cluster::config::Role::Notifier) => {
                tokio::spawn(async {})
            }
            Some(node) => spawn_worker(
                node.pg.clone(),
                receivers,
                &notify,
                &wake,
                &client,
                on_delivered,
                &worker_cancel,
            ),
            None => spawn_worker(
                store.clone(),
                receivers,
                &notify,
                &wake,
                &client,
                on_delivered,
                &worker_cancel,
            ),
        };

        let (tx, rx) = mpsc::channel(config.limits.queue_capacity);
        let (queries, queries_rx) = mpsc::channel(QUERY_QUEUE);
        let resolve_timeout_ms = notify.resolve_timeout_ms();
        let console = api::state::ConsoleSettings {
            enabled: config.console.enabled,
            session_ttl_ms: config.console.session_ttl_ms(),
            query_retention_secs: i64::try_from(config.retentions().query.as_secs())
                .unwrap_or(i64::MAX),
            builtin_rules: config.builtin_rules,
            rule_files: config
                .rule_files
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            pack: config.pack.clone(),
            receivers: notify.receivers.keys().cloned().collect(),
        };
        let notify_config_text: Arc<str> = if notify.original.is_empty() {
            "# webhooks shorthand of the service config\n".into()
        } else {
            notify.redacted_yaml().into()
        };
        let alerts_view = evaluator::views::AlertsView::default();
        let clusters = evaluator::views::ClustersView::default();
        let rule_groups = Arc::new(groups.clone());
        let mut stages = Vec::new();
        let pipeline = match &cluster {
            Some(node) => {
                if node.config.runs(cluster::config::Role::Notifier) {
                    let cancel = CancellationToken::new();
                    let grouping = cluster::alerts::spawn_notifier(
                        &node.config,
                        Dispatcher::new(
                            node.pg.clone(),
                            notify.clone(),
                            config.external_url.clone(),
                        ),
                        wake.clone(),
                        cancel.clone(),
                    )?;
                    stages.push((cancel, grouping));
                }
                let pipeline = evaluator::Pipeline::new(
                    groups,
                    config.external_labels.clone(),
                    Dispatcher::new(node.pg.clone(), notify, config.external_url.clone()),
                    node.pg.clone(),
                    wake,
                    config.evaluation_interval(),
                )
                .with_view(alerts_view.clone())
                .with_clusters(clusters.clone())
                .with_retention(config.retentions())
                .partitioned(node.alert_bus.clone());
                if node.config.runs(cluster::config::Role::Evaluator) {
                    let cancel = CancellationToken::new();
                    let consumer = cluster::bus::spawn_evaluator(
                        &node.config,
                        node.partitions,
                        pipeline.series_retention_ms(),
                        tx.clone(),
                        node.owned.clone(),
                        node.pg.clone(),
                        cancel.clone(),
                    )
                    .map_err(|e| Error::Io(e.to_string()))?;
                    stages.push((cancel, consumer));
                }
                tokio::spawn(pipeline.run(rx, queries_rx, pipeline_cancel.clone()))
            }
            None => {
                let mut pipeline = evaluator::Pipeline::new(
                    groups,
                    config.external_labels.clone(),
                    Dispatcher::new(store.clone(), notify, config.external_url.clone()),
                    store.clone(),
                    wake,
                    config.evaluation_interval(),
                )
                .with_view(alerts_view.clone())
                .with_clusters(clusters.clone())
                .with_retention(config.retentions());
                // Alert states and series windows come back before the first request.
                let pipeline = tokio::task::spawn_blocking(move || {
                    pipeline.restore(now_ms()).map(|_| pipeline)
                })
                .await
                .map_err(|e| Error::Io(e.to_string()))??;
                tokio::spawn(pipeline.run(rx, queries_rx, pipeline_cancel.clone()))
            }
        };

        let console_routes = if console.enabled {
            console::routes()
        } else {
            Vec::new()
        };
        // A cluster node without the api role answers only the agents and its health.
        let serves_api = cluster
            .as_ref()
            .is_none_or(|n| n.config.runs(cluster::config::Role::Api));
        let shared: Arc<dyn store::SharedStore> = match &cluster {
            Some(node) => node.pg.clone(),
            None => store.clone(),
        };
        let app = api::router_of(
            api::state::AppState {
                store: store.clone(),
                tenants: match &cluster {
                    Some(node) => Arc::new(store::KeyCache::new(
                        node.pg.clone(),
                        cluster::KEY_CACHE_TTL,
                    )),
                    None => store.clone(),
                },
                silences: shared.clone(),
                subscriptions: shared.clone(),
                history: shared,
                bus: cluster.as_ref().and_then(|n| n.bus.clone()),
                clustered: cluster.is_some(),
                tx,
                queries,
                limits: config.limits.clone(),
                alerts: alerts_view,
                clusters,
                rule_groups,
                evaluation_interval: config.evaluation_interval(),
                resolve_timeout_ms,
                notify_config_text,
                allow_private_webhook_urls: config.allow_private_webhook_urls,
                client: client.clone(),
                metrics: Arc::default(),
                rate: api::state::tenant_rate(&config.limits),
                started_at_ms: now_ms(),
                console: Arc::new(console),
            },
            console_routes,
            |r| serves_api || api::ingest_and_ops(r.path),
        );
        // Reads of the series see every evaluator's, wherever they arrive.
        let app = match &cluster {
            Some(node) => app.layer(axum::middleware::from_fn_with_state(
                Arc::new(cluster::fanout::Fanout::new(
                    node.pg.clone(),
                    node.node_id.clone(),
                )),
                cluster::fanout::layer,
            )),
            None => app,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
        let http = tokio::spawn(serve_tls(listener, acceptor, app, http_cancel.clone()));
        let mut heartbeat = Vec::new();
        if let Some(node) = &cluster {
            let cancel = CancellationToken::new();
            heartbeat.push((
                cancel.clone(),
                node.heartbeat(addr, identity.fingerprint.clone(), cancel),
            ));
        }
        // The listener stops first; then the evaluator's consumer leaves its group, so
        // its partitions move on while the pipeline saves its states.
        stages.insert(0, (http_cancel, http));
        stages.push((pipeline_cancel, pipeline));
        stages.push((worker_cancel, worker));
        stages.extend(heartbeat);
        Ok(Server {
            addr,
            fingerprint: identity.fingerprint,
            generated_certificate: identity.generated,
            store,
            stages,
            shutdown_timeout: config.shutdown_timeout(),
        })
    }

    /// Shuts down in order within `deadline`: stops accepting and lets requests in
    /// flight finish; the evaluator takes in what was acknowledged and flushes the groups
    /// that are due; the delivery worker makes a last pass over the outbox. What is not
    /// done by the deadline stays in the store for the next start.
    pub async fn shutdown(self, deadline: Duration) {
        let ordered = async move {
            for (cancel, task) in self.stages {
                cancel.cancel();
                let _ = task.await;
            }
        };
        if tokio::time::timeout(deadline, ordered).await.is_err() {
            tracing::warn!(
                ?deadline,
                "Shutdown deadline passed; the rest resumes at the next start."
            );
        }
    }

    /// Waits until `cancel` fires, then shuts down within `shutdown_timeout`.
    pub async fn run_until(self, cancel: CancellationToken) {
        cancel.cancelled().await;
        let deadline = self.shutdown_timeout;
        self.shutdown(deadline).await;
    }
}

/// Starts the delivery worker over `store`'s outbox.
fn spawn_worker<S: foresight_notifier::outbox::OutboxStore + Send + Sync + 'static>(
    store: Arc<S>,
    receivers: std::collections::HashMap<String, foresight_notifier::Integration>,
    notify: &foresight_notifier::config::NotifyConfig,
    wake: &Arc<Notify>,
    client: &reqwest::Client,
    on_delivered: Option<DeliveredHook>,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut worker = DeliveryWorker::new(store, receivers, RetryPolicy::default(), wake.clone())
        .with_rate_limits(notify)
        .with_client(client.clone());
    if let Some(hook) = on_delivered {
        worker = worker.on_delivered(move |p| hook(p));
    }
    tokio::spawn(worker.run(cancel.clone()))
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    cancel: CancellationToken,
) {
    // Connections are tracked so that shutdown waits for the requests in flight.
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => {
                connections.close();
                connections.wait().await;
                return;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let cancel = cancel.clone();
        connections.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                        return;
                    }
                    Err(_) => return,
                };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "Connection ended with an error.");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
