//! `foresight-agent`: collects a Kafka cluster's telemetry and ships it to Foresight.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use foresight_reporter::{AgentConfig, Reporter};
use tokio_util::sync::CancellationToken;

/// Collects Kafka cluster metadata and offsets (never message payloads) and ships them
/// over HTTPS to a Foresight ingest service.
#[derive(Parser, Debug)]
#[command(name = "foresight-agent", version)]
struct Args {
    /// Agent configuration file (YAML); see examples/agent.yml.
    #[arg(
        long,
        global = true,
        short,
        env = "FORESIGHT_AGENT_CONFIG",
        default_value = "/etc/foresight/agent.yml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
    /// Collect once, ship (or print) and exit.
    #[arg(long)]
    once: bool,
    /// Print the batch as JSON instead of sending it: exactly what would be shipped.
    #[arg(long)]
    print: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Validate the config, reach the cluster and the ingest (with the API key), and say
    /// what to fix; exit code 1 when anything fails.
    Check,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if let Some(Command::Check) = args.command {
        let text = std::fs::read_to_string(&args.config)
            .with_context(|| format!("reading {}", args.config.display()))?;
        let config: AgentConfig = match serde_saphyr::from_str(&text) {
            Ok(c) => c,
            Err(e) => {
                println!("FAIL config: {}: {e}", args.config.display());
                std::process::exit(1);
            }
        };
        let findings = foresight_reporter::check::run(&config).await;
        for f in &findings {
            println!("{f}");
        }
        if findings.iter().any(|f| !f.ok) {
            std::process::exit(1);
        }
        return Ok(());
    }
    let mut config = AgentConfig::load(&args.config)?;
    if args.print {
        // Printing needs no ingest, and leaves the spool alone.
        config.ingest.url.clear();
        config.spool.dir = None;
    }
    let config_has_spool = config.spool.dir.is_some();
    let reporter = Reporter::new(config).context("starting the agent")?;
    if args.print {
        let batch = reporter.collect_batch().await?;
        println!("{}", serde_json::to_string_pretty(&batch)?);
        return Ok(());
    }
    if args.once {
        let sent = reporter.run_once().await?;
        let waiting = reporter.pending().await;
        anyhow::ensure!(
            waiting == 0,
            "the ingest did not take every batch: {sent} delivered, {waiting} waiting{}",
            if config_has_spool {
                " in the spool for the next run"
            } else {
                " (and lost on exit: no spool.dir)"
            }
        );
        return Ok(());
    }
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Shutting down.");
        c.cancel();
    });
    tracing::info!(instance = reporter.instance_id(), "Agent started.");
    reporter.run(cancel).await;
    Ok(())
}
