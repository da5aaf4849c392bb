//! `foresight`: the Foresight ingest service and its command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
#[cfg(feature = "demo")]
use foresight_ingest::demo;
use foresight_ingest::{ServeConfig, Server, Store};
use tokio_util::sync::CancellationToken;

/// Self-hosted proactive support for Apache Kafka: receives telemetry from
/// foresight-agent, evaluates alert rules, and notifies before problems become outages.
#[derive(Parser, Debug)]
#[command(name = "foresight", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text`, or `json` (one object per line) for log shippers.
    #[arg(
        long,
        global = true,
        env = "FORESIGHT_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the ingest service (HTTPS API, rule evaluation, notifications).
    ///
    /// Every config field can be overridden by an environment variable: `FORESIGHT_`
    /// and its path in capitals, `__` between levels (`FORESIGHT_LISTEN`,
    /// `FORESIGHT_LIMITS__MAX_BODY_BYTES`). SIGTERM or Ctrl-C shut down gracefully
    /// within `shutdown_timeout`.
    Serve {
        /// Configuration file (YAML); built-in defaults when absent.
        #[arg(long, short, env = "FORESIGHT_CONFIG")]
        config: Option<PathBuf>,
        /// Override `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Override `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Create, list and revoke API keys: tenant keys with a scope (`ingest` for agents
    /// and remote write, `read` for dashboards, `admin` for everything in the tenant),
    /// and operator keys for tenant administration over the API.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// Configuration file, for its data_dir.
        #[arg(long, short, env = "FORESIGHT_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Override `data_dir`.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Create and list tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
        /// Configuration file, for its data_dir.
        #[arg(long, short, env = "FORESIGHT_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Override `data_dir`.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Create, list and expire silences (also at `/api/v2/silences`, where `amtool`
    /// can manage them).
    Silences {
        #[command(subcommand)]
        command: SilencesCommand,
        /// Configuration file, for its data_dir.
        #[arg(long, short, env = "FORESIGHT_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Override `data_dir`.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Check a config file as `serve` would load it (with environment overrides): the
    /// file, the rule files, the Alertmanager config and the certificate files. Exit 1
    /// with every problem listed.
    CheckConfig {
        /// Configuration file (YAML); built-in defaults when absent.
        #[arg(long, short, env = "FORESIGHT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check and test rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Cluster mode: the nodes of the service (from PostgreSQL), their roles, whether
    /// each is up, and the telemetry partitions each evaluator owns.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Ask a running service about its clusters.
    Clusters {
        #[command(subcommand)]
        command: ClustersCommand,
    },
    /// Run the whole pipeline in one process against an in-process Kafka mock cluster,
    /// inject a fault, and print each delivered notification as one JSON line.
    #[cfg(feature = "demo")]
    Demo {
        /// Exit 0 after the first delivered notification (non-zero if none in time).
        #[arg(long)]
        once: bool,
        /// With --once: seconds to wait for a notification.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Print every node with its roles, address, state (up when seen within the last
    /// 6 s) and owned partitions; exit 1 when a telemetry partition has no evaluator.
    Status {
        /// Configuration file with the `cluster:` section.
        #[arg(long, short, env = "FORESIGHT_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ClustersCommand {
    /// Write a cluster's support context to one file: its shape, broker releases and
    /// features, non-default and risky broker configs, drift between brokers, log dirs,
    /// topics by size and growth, lagging groups, open alerts and durability events, in
    /// Markdown with the whole JSON document at the end. Names are as the agents sent
    /// them (hashed where they hash). Prints the file's path.
    Context {
        /// The cluster (its `cluster` label, as `GET /api/v1/clusters` lists it).
        name: String,
        /// The service's base URL.
        #[arg(long, env = "FORESIGHT_URL", default_value = "https://127.0.0.1:8443")]
        url: String,
        /// A tenant key with the `read` scope.
        #[arg(long, env = "FORESIGHT_API_KEY", hide_env_values = true)]
        api_key: String,
        /// CA certificate (PEM) that signed the service's certificate.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Trust the service's certificate by its SHA-256 fingerprint (as `serve`
        /// prints it) instead.
        #[arg(long)]
        pinned_sha256: Option<String>,
        /// The file to write (default `<name>-context.md`).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key and print it once (only its hash is kept).
    Create {
        /// Tenant of the key (created if new).
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        tenant: Option<String>,
        /// What the key may do: ingest, read or admin.
        #[arg(long, default_value = "admin")]
        scope: String,
        /// An operator key instead: administers tenants and keys over the API, reads no
        /// tenant's data.
        #[arg(long)]
        operator: bool,
        /// Free text, e.g. which agent or person holds it.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (ids, scopes, names, revocation; never the keys themselves).
    List {
        /// Only this tenant's keys.
        #[arg(long, conflicts_with = "operator")]
        tenant: Option<String>,
        /// Only the operator keys.
        #[arg(long)]
        operator: bool,
    },
    /// Revoke a key by its id (the first 12 characters, as listed).
    Revoke {
        /// Tenant of the key.
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        tenant: Option<String>,
        /// The key is an operator key.
        #[arg(long)]
        operator: bool,
        /// Key id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum TenantsCommand {
    /// Create a tenant (keys are made with `foresight keys create`).
    Create {
        /// Name: letters, digits, '-', '_', '.'.
        name: String,
    },
    /// List tenants with their number of active keys.
    List,
}

#[derive(Subcommand, Debug)]
enum SilencesCommand {
    /// Silence alerts matching every matcher (`alertname="KafkaDiskFull"`,
    /// `cluster=~"prod-.*"`), from now for `--duration`; prints the id.
    Add {
        /// Tenant whose alerts to silence.
        #[arg(long)]
        tenant: String,
        /// Matchers, Alertmanager syntax; at least one.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, for example `2h` or `30m`.
        #[arg(long, default_value = "1h")]
        duration: String,
        /// Who (default: $USER).
        #[arg(long)]
        created_by: Option<String>,
        /// Why.
        #[arg(long, required = true)]
        comment: String,
    },
    /// List a tenant's silences with their state.
    List {
        /// Tenant.
        #[arg(long)]
        tenant: String,
    },
    /// End a silence now.
    Expire {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Silence id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum RulesCommand {
    /// Check rule files for errors, like `promtool check rules`.
    Check {
        /// Rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests in promtool's `test rules` format; exit 1 on any failure.
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn load_config(path: Option<&PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<ServeConfig> {
    let mut cfg = ServeConfig::load_with_env(path.map(PathBuf::as_path), std::env::vars())?;
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    Ok(cfg)
}

fn shutdown_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        tracing::info!("Shutting down.");
        c.cancel();
        // A second signal stops at once.
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
    cancel
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut cfg = load_config(config.as_ref(), data_dir)?;
            if let Some(l) = listen {
                cfg.listen = l;
            }
            let server = Server::start(cfg, None)
                .await
                .context("starting foresight serve")?;
            eprintln!("foresight: listening on https://{}", server.addr);
            eprintln!(
                "foresight: certificate SHA-256 fingerprint {}{}",
                server.fingerprint,
                if server.generated_certificate {
                    " (self-signed, generated now)"
                } else {
                    ""
                }
            );
            server.run_until(shutdown_signal()).await;
        }
        Command::Keys {
            command,
            config,
            data_dir,
        } => {
            let cfg = load_config(config.as_ref(), data_dir)?;
            tokio::task::spawn_blocking(move || keys_command(&*open_shared(&cfg)?.0, command))
                .await??;
        }
        Command::Tenants {
            command,
            config,
            data_dir,
        } => {
            let cfg = load_config(config.as_ref(), data_dir)?;
            tokio::task::spawn_blocking(move || tenants_command(&*open_shared(&cfg)?.0, command))
                .await??;
        }
        Command::Silences {
            command,
            config,
            data_dir,
        } => {
            let cfg = load_config(config.as_ref(), data_dir)?;
            tokio::task::spawn_blocking(move || silences_command(&*open_shared(&cfg)?.1, command))
                .await??;
        }
        Command::Cluster {
            command: ClusterCommand::Status { config },
        } => {
            let cfg = load_config(config.as_ref(), None)?;
            tokio::task::spawn_blocking(move || cluster_status(&cfg)).await??;
        }
        Command::CheckConfig { config } => {
            check_config(config.as_ref())?;
        }
        Command::Rules {
            command: RulesCommand::Check { files },
        } => {
            let mut failed = false;
            for f in &files {
                match foresight_rules::load_file(f) {
                    Ok(groups) => {
                        let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
                        println!("Checking {}\n  SUCCESS: {rules} rules found", f.display());
                    }
                    Err(e) => {
                        failed = true;
                        println!("Checking {}\n  FAILED:\n{e}", f.display());
                    }
                }
            }
            if failed {
                std::process::exit(1);
            }
        }
        Command::Rules {
            command: RulesCommand::Test { files },
        } => {
            let mut failed = false;
            for f in &files {
                println!("Unit Testing:  {}", f.display());
                let report = foresight_rules::unittest::run_file(f);
                if report.passed() {
                    println!("  SUCCESS");
                    continue;
                }
                failed = true;
                println!("  FAILED:");
                for e in report.errors.iter().chain(&report.failures) {
                    for line in e.lines() {
                        println!("    {line}");
                    }
                }
            }
            if failed {
                std::process::exit(1);
            }
        }
        Command::Clusters {
            command:
                ClustersCommand::Context {
                    name,
                    url,
                    api_key,
                    ca_file,
                    pinned_sha256,
                    output,
                },
        } => {
            let tls = foresight_tls::client_config(ca_file.as_deref(), pinned_sha256.as_deref())?;
            let client = reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .timeout(std::time::Duration::from_secs(60))
                .build()?;
            let mut endpoint = url::Url::parse(&url).context("--url")?;
            endpoint
                .path_segments_mut()
                .map_err(|()| anyhow::anyhow!("--url {url} cannot take a path"))?
                .pop_if_empty()
                .extend(["api", "v1", "clusters", &name, "context"]);
            let response = client
                .get(endpoint.clone())
                .bearer_auth(&api_key)
                .send()
                .await
                .with_context(|| format!("GET {endpoint}"))?;
            let status = response.status();
            let body = response.text().await?;
            if !status.is_success() {
                anyhow::bail!("GET {endpoint}: {status}: {body}");
            }
            let ctx: serde_json::Value =
                serde_json::from_str(&body).context("the context is not JSON")?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}-context.md")));
            std::fs::write(&path, foresight_ingest::context::markdown(&ctx))
                .with_context(|| format!("writing {}", path.display()))?;
            println!("{}", path.display());
        }
        #[cfg(feature = "demo")]
        Command::Demo { once, timeout } => {
            let opts = demo::DemoOptions {
                once,
                timeout: std::time::Duration::from_secs(timeout),
                ..demo::DemoOptions::default()
            };
            demo::run(opts, shutdown_signal()).await?;
        }
    }
    Ok(())
}

fn tenants_command(
    store: &dyn foresight_ingest::store::TenantStore,
    command: TenantsCommand,
) -> anyhow::Result<()> {
    match command {
        TenantsCommand::Create { name } => {
            foresight_ingest::store::valid_tenant_name(&name).map_err(anyhow::Error::msg)?;
            store.ensure_tenant(&name)?;
            println!("{name}");
        }
        TenantsCommand::List => {
            println!("TENANT\tACTIVE KEYS\tCREATED");
            for t in store.tenants()? {
                println!(
                    "{}\t{}\t{}",
                    t.name,
                    t.active_keys,
                    foresight_notifier::payload::rfc3339_ms(t.created_at_ms)
                );
            }
        }
    }
    Ok(())
}

/// The tenants, keys and silences `cfg` names: PostgreSQL in cluster mode, the data
/// dir's SQLite file otherwise. Blocking.
type Shared = (
    Arc<dyn foresight_ingest::store::TenantStore>,
    Arc<dyn foresight_ingest::store::SilenceStore>,
);

fn open_shared(cfg: &ServeConfig) -> anyhow::Result<Shared> {
    if let Some(c) = &cfg.cluster {
        let pg = Arc::new(
            foresight_ingest::store::pg::PgStore::connect(&c.postgres.url, 2)
                .context("connecting to cluster.postgres.url")?,
        );
        return Ok((pg.clone(), pg));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
    let store = Arc::new(Store::open(&cfg.data_dir)?);
    Ok((store.clone(), store))
}

fn cluster_status(cfg: &ServeConfig) -> anyhow::Result<()> {
    let Some(c) = &cfg.cluster else {
        anyhow::bail!("the configuration has no cluster: section; this is one node on SQLite");
    };
    let pg = foresight_ingest::store::pg::PgStore::connect(&c.postgres.url, 1)
        .context("connecting to cluster.postgres.url")?;
    let nodes = pg.nodes()?;
    let now = foresight_proto::now_ms();
    println!("NODE\tSTATE\tROLES\tADDRESS\tPARTITIONS\tSEEN");
    let mut owned = std::collections::BTreeSet::new();
    let mut evaluators = 0;
    for n in &nodes {
        let up = foresight_ingest::cluster::nodes::is_up(n.seen_at_ms, now);
        if up {
            owned.extend(n.partitions.iter().copied());
            evaluators += usize::from(n.roles.iter().any(|r| r == "evaluator"));
        }
        let parts: Vec<String> = n.partitions.iter().map(ToString::to_string).collect();
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            n.node_id,
            if up { "up" } else { "down" },
            n.roles.join(","),
            n.address,
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(",")
            },
            foresight_notifier::payload::rfc3339_ms(n.seen_at_ms)
        );
    }
    let partitions = c.topics.telemetry_partitions;
    let orphans: Vec<String> = (0..partitions)
        .filter(|p| !owned.contains(p))
        .map(|p| p.to_string())
        .collect();
    println!(
        "{} nodes up of {}; {evaluators} evaluators; {} of {partitions} telemetry partitions owned",
        nodes
            .iter()
            .filter(|n| foresight_ingest::cluster::nodes::is_up(n.seen_at_ms, now))
            .count(),
        nodes.len(),
        partitions as usize - orphans.len(),
    );
    if !orphans.is_empty() {
        println!("partitions without an evaluator: {}", orphans.join(","));
        std::process::exit(1);
    }
    Ok(())
}

fn check_config(path: Option<&PathBuf>) -> anyhow::Result<()> {
    let name = path.map_or_else(|| "(defaults)".into(), |p| p.display().to_string());
    let cfg = match load_config(path, None) {
        Ok(c) => c,
        Err(e) => {
            println!("{name}: FAILED\n{e}");
            std::process::exit(1);
        }
    };
    let mut problems = Vec::new();
    let groups = foresight_ingest::load_rules(&cfg)
        .map_err(|e| problems.push(e.to_string()))
        .unwrap_or_default();
    let receivers = match cfg.notify_config() {
        Ok(n) => {
            // Built as `serve` builds them: secrets from `_file` settings are read and
            // URLs parsed, so a missing file shows here rather than at the start.
            let built = foresight_ingest::receiver_clients()
                .map_err(|e| vec![format!("HTTP client: {e}")])
                .and_then(|(tls, client)| {
                    foresight_notifier::build_integrations(&n, &client, &tls)
                });
            if let Err(e) = built {
                problems.extend(e);
            }
            n.receivers.len()
        }
        Err(e) => {
            problems.push(e);
            0
        }
    };
    if let Some(cert) = &cfg.tls.cert_file
        && let Err(e) = foresight_ingest::tls::fingerprint_of(cert)
    {
        problems.push(format!("tls.cert_file: {e}"));
    }
    if let Some(key) = &cfg.tls.key_file
        && let Err(e) = std::fs::read(key)
    {
        problems.push(format!("tls.key_file: {}: {e}", key.display()));
    }
    if !problems.is_empty() {
        println!("{name}: FAILED");
        for p in problems {
            println!("  {p}");
        }
        std::process::exit(1);
    }
    let rules: usize = groups.iter().map(|g| g.rules.len()).sum();
    println!(
        "{name}: SUCCESS: listen {}, data_dir {}, {} rule groups with {rules} rules, {receivers} receivers",
        cfg.listen,
        cfg.data_dir.display(),
        groups.len()
    );
    if let Some(c) = &cfg.cluster {
        // The config is checked, not the servers: check-config runs where they may
        // not be reachable (a CI job, a laptop).
        println!(
            "{name}: cluster mode: node {}, roles {}, Kafka {}, topic {} ({} partitions), PostgreSQL {}",
            c.node_id(&cfg.listen),
            c.role_names().join(","),
            c.kafka.bootstrap_servers,
            c.topics.telemetry,
            c.topics.telemetry_partitions,
            redact_url(&c.postgres.url),
        );
    }
    Ok(())
}

/// `url` without its password.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".into(),
    }
}

fn keys_command(
    store: &dyn foresight_ingest::store::TenantStore,
    command: KeysCommand,
) -> anyhow::Result<()> {
    use foresight_ingest::store::Scope;
    match command {
        KeysCommand::Create {
            tenant,
            scope,
            operator,
            name,
        } => {
            let key = match tenant {
                Some(t) if !operator => {
                    foresight_ingest::store::valid_tenant_name(&t).map_err(anyhow::Error::msg)?;
                    let scope: Scope = scope.parse().map_err(anyhow::Error::msg)?;
                    store.create_scoped_key(&t, scope, &name)?
                }
                _ => store.create_operator_key(&name)?,
            };
            println!("{key}");
        }
        KeysCommand::List { tenant, operator } => {
            let mut keys = Vec::new();
            if let Some(t) = &tenant {
                keys = store.keys(Some(t))?;
            } else {
                if !operator {
                    for t in store.tenants()? {
                        keys.extend(store.keys(Some(&t.name))?);
                    }
                }
                keys.extend(store.keys(None)?);
            }
            println!("ID\tTENANT\tSCOPE\tNAME\tCREATED\tREVOKED");
            for k in keys {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.tenant.as_deref().unwrap_or("-"),
                    k.scope,
                    k.name,
                    foresight_notifier::payload::rfc3339_ms(k.created_at_ms),
                    k.revoked_at_ms
                        .map(foresight_notifier::payload::rfc3339_ms)
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysCommand::Revoke {
            tenant,
            operator,
            id,
        } => {
            store.revoke_key(if operator { None } else { tenant.as_deref() }, &id)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

fn silences_command(
    store: &dyn foresight_ingest::store::SilenceStore,
    command: SilencesCommand,
) -> anyhow::Result<()> {
    use foresight_notifier::matchers::parse_matchers;
    use foresight_notifier::silence::Silence;
    let now = foresight_proto::now_ms();
    match command {
        SilencesCommand::Add {
            tenant,
            matchers,
            duration,
            created_by,
            comment,
        } => {
            let mut parsed = Vec::new();
            for m in &matchers {
                parsed.extend(parse_matchers(m).map_err(anyhow::Error::msg)?);
            }
            if parsed.iter().all(|m| m.matches(&Default::default())) {
                anyhow::bail!(
                    "at least one matcher must not match the empty string, or the silence mutes every alert"
                );
            }
            let d = foresight_notifier::config::parse_duration(&duration)
                .map_err(anyhow::Error::msg)?;
            let id = store.put_silence(
                &tenant,
                &Silence {
                    id: String::new(),
                    matchers: parsed,
                    starts_at_ms: now,
                    ends_at_ms: now + d.as_millis() as i64,
                    created_by: created_by
                        .or_else(|| std::env::var("USER").ok())
                        .unwrap_or_else(|| "foresight".into()),
                    comment,
                    updated_at_ms: now,
                },
            )?;
            println!("{id}");
        }
        SilencesCommand::List { tenant } => {
            println!("ID\tSTATE\tMATCHERS\tENDS\tCREATED BY\tCOMMENT");
            for s in store.list_silences(&tenant)? {
                let matchers: Vec<String> = s.matchers.iter().map(ToString::to_string).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.id,
                    s.state(now),
                    matchers.join(","),
                    foresight_notifier::payload::rfc3339_ms(s.ends_at_ms),
                    s.created_by,
                    s.comment
                );
            }
        }
        SilencesCommand::Expire { tenant, id } => {
            store.expire_silence(&tenant, &id)?;
            println!("expired {id}");
        }
    }
    Ok(())
}
