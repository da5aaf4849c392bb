//! `foresight`: the Foresight ingest service and its command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use foresight_ingest::{ServeConfig, Server, Store, demo};
use tokio_util::sync::CancellationToken;

/// Self-hosted proactive support for Apache Kafka: receives telemetry from
/// foresight-agent, evaluates alert rules, and notifies before problems become outages.
#[derive(Parser, Debug)]
#[command(name = "foresight", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the ingest service (HTTPS API, rule evaluation, notifications).
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
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
    /// Check and test rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run the whole pipeline in one process against an in-process Kafka mock cluster,
    /// inject a fault, and print each delivered notification as one JSON line.
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
enum KeysCommand {
    /// Create an API key for a tenant (created if new) and print it once.
    Create {
        /// Tenant name.
        #[arg(long)]
        tenant: String,
        /// Configuration file, for its data_dir.
        #[arg(long, short, env = "FORESIGHT_CONFIG")]
        config: Option<PathBuf>,
        /// Override `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
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
    let mut cfg = match path {
        Some(p) => ServeConfig::load(p)?,
        None => ServeConfig::default(),
    };
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
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
            command:
                KeysCommand::Create {
                    tenant,
                    config,
                    data_dir,
                },
        } => {
            let cfg = load_config(config.as_ref(), data_dir)?;
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
            let store = Store::open(&cfg.data_dir)?;
            println!("{}", store.create_key(&tenant)?);
        }
        Command::Silences {
            command,
            config,
            data_dir,
        } => {
            let cfg = load_config(config.as_ref(), data_dir)?;
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
            let store = Store::open(&cfg.data_dir)?;
            silences_command(&store, command)?;
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
        Command::Demo { once, timeout } => {
            let opts = demo::DemoOptions {
                once,
                timeout: Duration::from_secs(timeout),
                ..demo::DemoOptions::default()
            };
            demo::run(opts, shutdown_signal()).await?;
        }
    }
    Ok(())
}

fn silences_command(store: &Store, command: SilencesCommand) -> anyhow::Result<()> {
    use foresight_notifier::matchers::parse_matchers;
    use foresight_notifier::silence::Silence;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
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
