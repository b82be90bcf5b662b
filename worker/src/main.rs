//! `worker`: run the jobs of one region.

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool prints its results on stdout"
)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use protocol::service::{shutdown, telemetry};
use worker::Config;

#[derive(Parser)]
#[command(name = "worker", version, about = "Switchyard regional worker")]
struct Cli {
    /// TOML file overriding the built-in defaults.
    #[arg(long, global = true, env = "SWITCHYARD_WORKER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Pull and run jobs (the default).
    Run,
    /// Validate the configuration and print it.
    ConfigCheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::ConfigCheck => {
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            println!("# configuration is valid");
            Ok(())
        }
        Command::Run => {
            let _telemetry = telemetry::init(&cfg.telemetry, "worker")?;
            let shutdown = shutdown::on_signal();
            let ops_addr = cfg.worker.ops_listen;
            let w = worker::build(cfg).await?;
            let ops = tokio::net::TcpListener::bind(ops_addr)
                .await
                .with_context(|| format!("binding {ops_addr}"))?;
            worker::run(w, ops, shutdown).await?;
            Ok(())
        }
    }
}
