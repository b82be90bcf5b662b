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
    /// Register a shard database in a region.
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ConfigCheck => {
            let cfg = Config::load(cli.config.as_deref())?;
            println!("{}", toml_string(&cfg)?);
            println!("# configuration is valid");
            Ok(())
        }
        Command::Serve => serve(cli.config).await,
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
                    db::shards::add(&catalog, &name, &region, &dsn).await?;
                    println!("shard {name} registered in {region}");
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

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref())?;
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
