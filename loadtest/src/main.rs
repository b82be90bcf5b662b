//! `loadtest`: open-loop load against Switchyard (and its ceilings and peers) on this machine.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool prints its reports on stdout and its notices on stderr"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::cli::{self, OutputArgs, RunCmd, SearchCmd};
use loadtest::jetstream::{self, JetstreamArgs};
use loadtest::jobs::JobsCmd;
use loadtest::shardmap::ShardMapCmd;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Open-loop load generator for Switchyard (loopback targets only)"
)]
struct Cli {
    /// Threads of the generator's runtime (the machine's other cores are left to the target).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one schedule (constant, ramp, trace or bursts) and report latencies and errors.
    Run(Box<RunCmd>),
    /// Find the highest constant rate whose p99 stays under a bound.
    Search(Box<SearchCmd>),
    /// Measure the raw JetStream acknowledged-publish rate (pipelined and one at a time).
    Jetstream {
        #[command(flatten)]
        args: JetstreamArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// How fast this host is now: one HMAC-SHA256 of a webhook-sized body, and one loopback
    /// TCP round trip (`make bench` records both before and after its runs).
    Calibrate {
        /// How long each of the two measurements takes.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        each: Duration,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Serve the no-op handler (202 to any POST) the way Switchyard serves, for its ceiling.
    NoopServer {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:18613")]
        listen: SocketAddr,
        /// Stop after this long even if not told to.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
    /// Delete the JetStream streams whose names start with a prefix (a benchmark's namespace).
    DeleteStreams {
        #[arg(long, env = "NATS_URL")]
        nats: String,
        #[arg(long)]
        prefix: String,
    },
    /// Webhook `202` → job running at steady rates, and the worker's overhead per job
    /// (`make bench-workers`).
    Jobs(Box<JobsCmd>),
    /// The shard map on a real catalog: its load time, and the shard lookup's cost per
    /// request (`make bench-shards`).
    ShardMap(Box<ShardMapCmd>),
    /// Write one marked section of docs/benchmarks.md (workers, tenancy or shards) from the
    /// results of `loadtest/worker-bench.sh` or `loadtest/shard-bench.sh`, leaving the rest
    /// of the file as it is.
    Section {
        /// Which section: workers, tenancy or shards.
        #[arg(long, value_parser = ["workers", "tenancy", "shards"])]
        name: String,
        /// The directory the benchmark wrote its results to.
        #[arg(long)]
        dir: PathBuf,
        /// The Markdown file to update.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
    /// Write docs/benchmarks.md from the results of a `make bench` run (the sections other
    /// benchmarks wrote into it are kept).
    Report {
        /// The directory `loadtest/bench.sh` wrote its results to.
        #[arg(long)]
        dir: PathBuf,
        /// The Markdown file to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.clamp(1, 64))
        .enable_all()
        .build()?;
    // The command runs as a task on the runtime's threads rather than on this one: with
    // `block_on`'s thread apart, every hand-off between the dispatcher (or a publisher
    // loop) and the connections' tasks would wake another thread, and the generator would
    // take more of the cores it shares with what it measures.
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Run(cmd) => print!("{}", cli::run(&cmd).await?),
            Command::Search(cmd) => print!("{}", cli::search(&cmd).await?),
            Command::Jetstream { args, output } => {
                let report = jetstream::measure(&args).await?;
                print!("{}", output.render(&report, || report.human())?);
            }
            Command::Calibrate { each, output } => {
                let each = each.min(Duration::from_secs(60));
                let report =
                    tokio::task::spawn_blocking(move || loadtest::calibrate::measure(each))
                        .await??;
                print!("{}", output.render(&report, || report.human())?);
            }
            Command::NoopServer { listen, lifetime } => {
                let shutdown = protocol::service::shutdown::on_signal();
                eprintln!("no-op server on http://{listen} (202 to any POST)");
                loadtest::noop::serve(listen, lifetime, shutdown).await?;
            }
            Command::DeleteStreams { nats, prefix } => {
                for name in jetstream::delete_streams(&nats, &prefix).await? {
                    println!("deleted stream {name}");
                }
            }
            Command::Jobs(cmd) => print!("{}", loadtest::jobs::measure(&cmd).await?),
            Command::ShardMap(cmd) => print!("{}", loadtest::shardmap::measure(&cmd).await?),
            Command::Section { name, dir, out } => {
                let body = match name.as_str() {
                    "workers" => loadtest::sections::workers(&dir)?,
                    "tenancy" => loadtest::sections::tenancy(&dir)?,
                    _ => loadtest::sections::shards(&dir)?,
                };
                let old = std::fs::read_to_string(&out).unwrap_or_default();
                std::fs::write(&out, loadtest::sections::replace(&old, &name, &body))?;
                eprintln!("wrote the {name} section of {}", out.display());
            }
            Command::Report { dir, out } => {
                let old = std::fs::read_to_string(&out).unwrap_or_default();
                let new = loadtest::bench::render(&dir)?;
                std::fs::write(&out, loadtest::sections::carry_over(&old, &new))?;
                eprintln!("wrote {}", out.display());
            }
        }
        anyhow::Ok(())
    });
    match runtime.block_on(command) {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.into()),
    }
}
