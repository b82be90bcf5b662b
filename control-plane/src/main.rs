//! `control-plane`: serve the API, migrate, manage regions and shards, check the config.

#![allow(
    clippy::print_stdout,
    reason = "a command-line tool prints its results on stdout"
)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use control_plane::config::Config;
use control_plane::db;
use protocol::service::db::{PoolSettings, ShardRouter, connect_catalog};
use protocol::service::{shutdown, telemetry};

/// mimalloc: the intake allocates and frees a body-sized buffer and many small values per
/// webhook on several threads; with it the control plane used about 5 % less CPU per webhook
/// than with the system allocator (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "control-plane", version, about = "Switchyard control plane")]
struct Cli {
    /// TOML file overriding the built-in defaults.
    #[arg(long, global = true, env = "SWITCHYARD_CP_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and run the background tasks.
    Serve,
    /// Apply migrations to the catalog and to every registered shard.
    Migrate,
    /// Validate the configuration and print it with secrets redacted.
    ConfigCheck,
    /// Regions.
    #[command(subcommand)]
    Regions(RegionsCmd),
    /// Shards and their org-id ranges.
    #[command(subcommand)]
    Shards(ShardsCmd),
    /// Access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Print the OpenAPI document the API serves at /openapi.json.
    Openapi,
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Generate an Ed25519 key pair for auth.jwt (private key PEM, then public key PEM).
    Generate,
}

#[derive(Subcommand)]
enum RegionsCmd {
    /// Register a region (or update its public API URL).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        api_url: String,
    },
    /// List regions.
    List,
}

#[derive(Subcommand)]
enum ShardsCmd {
    /// Register a shard database in a region (it must answer; it is migrated first).
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        region: String,
        #[arg(long, env = "SWITCHYARD_SHARD_DSN")]
        dsn: String,
    },
    /// Open an org-id range [start, end) on a shard.
    AddRange {
        #[arg(long)]
        shard: String,
        #[arg(long)]
        start: i64,
        #[arg(long)]
        end: i64,
    },
    /// List shards and ranges.
    List,
    /// Move the orgs of [start, end) to another shard of their region, online, with progress.
    Move {
        #[arg(long)]
        start: i64,
        #[arg(long)]
        end: i64,
        /// The target shard.
        #[arg(long)]
        to: String,
    },
    /// Show recent range moves.
    Moves,
    /// Finish or roll back a move whose runner stopped (the process died mid-move) now,
    /// without waiting for the control planes to do it (they do within about 30 s).
    RecoverMove {
        /// The move id (`mv_…`).
        id: String,
        /// Even if it reported progress in the last minute (never while its runner is alive).
        #[arg(long)]
        force: bool,
    },
    /// Drop the source shard's copy of a finished move's range.
    DropSource {
        /// The move id (`mv_…`).
        id: String,
    },
    /// Check the map's invariants and every shard's schema against this build (drift).
    Verify,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `serve` sizes its runtime from its configuration; the one-off commands take the default.
    let serving = match cli.command {
        Command::Serve => Some(Config::load(cli.config.as_deref())?),
        _ => None,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    match serving.as_ref().map(|c| c.server.worker_threads) {
        Some(threads) if threads > 0 => {
            runtime.worker_threads(threads);
        }
        _ => {}
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match serving {
        Some(cfg) => runtime.block_on(serve(cfg)),
        None => runtime.block_on(run(cli)),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ConfigCheck => {
            let cfg = Config::load(cli.config.as_deref())?;
            println!("{}", toml_string(&cfg)?);
            println!("# configuration is valid");
            Ok(())
        }
        Command::Serve => unreachable!("main runs `serve` on a runtime sized by its configuration"),
        Command::Keys(KeysCmd::Generate) => {
            let pair = control_plane::tenancy::jwt::generate_pem();
            print!("{}{}", pair.private_pem, pair.public_pem);
            Ok(())
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&control_plane::http::openapi_document())?
            );
            Ok(())
        }
        Command::Migrate => {
            let cfg = load_for_admin(cli.config.as_deref())?;
            let catalog = connect_catalog(&cfg.database)
                .await
                .context("connecting to the catalog")?;
            db::migrate::catalog(&catalog).await?;
            println!("catalog migrated");
            let router = ShardRouter::load(catalog, PoolSettings::shards(&cfg.database)).await?;
            for shard in db::migrate::shards(&router).await? {
                println!("shard {shard} migrated");
            }
            Ok(())
        }
        Command::Regions(cmd) => {
            let cfg = load_for_admin(cli.config.as_deref())?;
            let catalog = connect_catalog(&cfg.database)
                .await
                .context("connecting to the catalog")?;
            match cmd {
                RegionsCmd::Add { name, api_url } => {
                    protocol::Region::new(name.clone())?;
                    db::regions::upsert(&catalog, &name, &api_url).await?;
                    println!("region {name} registered ({api_url})");
                }
                RegionsCmd::List => {
                    for r in db::regions::list(&catalog).await? {
                        println!("{}\t{}", r.name, r.api_url);
                    }
                }
            }
            Ok(())
        }
        Command::Shards(cmd) => {
            let cfg = load_for_admin(cli.config.as_deref())?;
            let catalog = connect_catalog(&cfg.database)
                .await
                .context("connecting to the catalog")?;
            match cmd {
                ShardsCmd::Add { name, region, dsn } => {
                    control_plane::sharding::register(&catalog, &name, &region, &dsn).await?;
                    println!("shard {name} migrated and registered in {region}");
                }
                ShardsCmd::Move { start, end, to } => {
                    return move_range(&catalog, start, end, &to).await;
                }
                ShardsCmd::Moves => {
                    for m in control_plane::sharding::moves::list(&catalog).await? {
                        println!(
                            "{}\t[{}, {})\t{} -> {}\t{}\tcopied {}/{}\tpause {}",
                            m.id,
                            m.start,
                            m.end,
                            m.from_shard,
                            m.to_shard,
                            m.phase,
                            m.rows_copied,
                            m.rows_total,
                            m.pause_ms.map_or("-".into(), |p| format!("{p} ms")),
                        );
                    }
                }
                ShardsCmd::RecoverMove { id, force } => {
                    let done = control_plane::sharding::moves::recover(
                        &catalog,
                        &id,
                        std::time::Duration::from_secs(60),
                        force,
                    )
                    .await?;
                    println!("move {id}: {done:?}");
                }
                ShardsCmd::DropSource { id } => {
                    let n = control_plane::sharding::moves::drop_source(&catalog, &id).await?;
                    println!("dropped {n} rows of move {id} from its source shard");
                }
                ShardsCmd::Verify => {
                    let report = control_plane::sharding::verify(&catalog).await?;
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    if !report.ok() {
                        anyhow::bail!(
                            "the shards drifted from the map or from this build's migrations"
                        );
                    }
                    println!("# every shard is at this build's migrations; the map is valid");
                }
                ShardsCmd::AddRange { shard, start, end } => {
                    db::shards::add_range(&catalog, &shard, start, end).await?;
                    println!("range [{start}, {end}) opened on {shard}");
                }
                ShardsCmd::List => {
                    let map = protocol::service::db::read_map(&catalog).await?;
                    for s in map.shards() {
                        println!("{}\t{}", s.name, s.region);
                    }
                    for r in db::shards::ranges(&catalog).await? {
                        println!(
                            "[{}, {})\t{}\tnext {}\t{}",
                            r.start,
                            r.end,
                            r.shard,
                            r.next_id,
                            if r.open { "open" } else { "closed" }
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// Runs a range move here, drawing its progress.
async fn move_range(catalog: &sqlx::PgPool, start: i64, end: i64, to: &str) -> anyhow::Result<()> {
    use control_plane::sharding::moves;
    let planned = moves::plan(catalog, start, end, to).await?;
    println!(
        "move {}: [{start}, {end}) from {} to {}",
        planned.id, planned.from_shard, planned.to_shard
    );
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:>12} [{bar:40}] {pos}/{len} rows ({elapsed})",
        )?
        .progress_chars("=> "),
    );
    let progress = |s: &moves::MoveStatus| {
        bar.set_length(u64::try_from(s.rows_total.max(1)).unwrap_or(1));
        bar.set_position(u64::try_from(s.rows_copied).unwrap_or(0));
        bar.set_message(format!("{} lag {}", s.phase, s.lag_rows));
    };
    let done = moves::run(catalog, &planned.id, &progress).await?;
    bar.finish();
    println!(
        "{}: {} rows copied, writes paused {} ms",
        done.phase,
        done.rows_copied,
        done.pause_ms.unwrap_or(0)
    );
    if let Some(v) = &done.verification {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    if done.phase != "done" {
        anyhow::bail!(
            "the move did not complete ({}); it was rolled back{}",
            done.phase,
            done.error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// Admin commands need the database settings, not a complete serving configuration.
fn load_for_admin(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let cfg: Config = protocol::service::config::load(
        control_plane::config::DEFAULTS,
        file,
        control_plane::config::ENV_PREFIX,
    )?;
    Ok(cfg)
}

fn toml_string(cfg: &Config) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(cfg)?)
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&cfg.telemetry, "control-plane")?;
    let listen = cfg.server.listen;
    let shutdown = shutdown::on_signal();
    let state = control_plane::build(cfg).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    control_plane::run(state, listener, shutdown).await?;
    Ok(())
}
