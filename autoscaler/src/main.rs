//! `autoscaler`: `run` sizes a region's worker pool; `backtest` replays a trace through the
//! policies; `config-check` validates and prints the configuration.

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool prints its results on stdout"
)]

use std::path::PathBuf;

use anyhow::Context;
use autoscaler::Config;
use clap::{Parser, Subcommand};
use protocol::service::{shutdown, telemetry};

#[derive(Parser)]
#[command(
    name = "autoscaler",
    version,
    about = "Switchyard predictive autoscaler"
)]
struct Cli {
    /// TOML file overriding the built-in defaults (`run`, `config-check`).
    #[arg(long, global = true, env = "SWITCHYARD_AUTOSCALER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Size the region's worker pool until SIGTERM.
    Run,
    /// Validate the configuration and print it.
    ConfigCheck,
    /// Replay a `timestamp,value` trace through the reactive and predictive policies.
    Backtest(Box<autoscaler::backtest::Args>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Backtest(args) => {
            let backtest = autoscaler::backtest::run(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&backtest.report)?);
            } else {
                print!("{}", autoscaler::backtest::table(&backtest));
            }
            Ok(())
        }
        Command::ConfigCheck => {
            let cfg = Config::load(cli.config.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&cfg)?);
            println!("# configuration is valid");
            Ok(())
        }
        Command::Run => {
            let cfg = Config::load(cli.config.as_deref())?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?
                .block_on(serve(cfg))
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&cfg.telemetry, "autoscaler")?;
    let shutdown = shutdown::on_signal();
    let addr = cfg.ops.listen;
    let ops = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    // The loop holds the whole state of the region: keep it on the heap.
    Box::pin(autoscaler::run(cfg, ops, shutdown)).await?;
    Ok(())
}
