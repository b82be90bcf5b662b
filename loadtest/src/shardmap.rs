//! `loadtest shard-map`: what the shard map costs a service, measured on a real catalog (the
//! one `loadtest/shard-bench.sh` fills with 1,000,000 orgs).
//!
//! * **load**: [`read_map`] — the catalog query of shards and ranges and the map's validation,
//!   what a service does at start-up and at every reload — and [`ShardRouter::load`], which
//!   also prepares one (lazy) pool per shard; timed `--loads` times each, after one
//!   unmeasured read that opens the catalog connection;
//! * **route**: [`ShardRouter::route`] — an atomic load of the current map, the binary search
//!   and the clone of the shard's handle, which every org-scoped request does — and the
//!   search alone ([`ShardMap::locate`](protocol::shardmap::ShardMap::locate)), in
//!   `--batches` batches of `--lookups` random org ids drawn from the ids the catalog's ranges
//!   have handed out; nanoseconds per lookup of each batch;
//! * **check**: for `--check` of those org ids that exist in the catalog's `org` table, the
//!   router's shard is the shard of the catalog range that holds the id (a SQL join).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use protocol::OrgId;
use protocol::service::db::{PoolSettings, ShardRouter, read_map};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;

use crate::cli::OutputArgs;
use crate::jobs::local_postgres;

/// Random org ids looked up in turn (a power of two).
const IDS: usize = 1 << 16;

#[derive(Args, Clone, Debug)]
pub struct ShardMapCmd {
    /// The catalog database (loopback only).
    #[arg(long, env = "CATALOG_URL", hide_env_values = true)]
    pub catalog: String,
    /// Timed loads of the map (each of `read_map` and `ShardRouter::load`).
    #[arg(long, default_value_t = 20)]
    pub loads: usize,
    /// Timed batches of lookups.
    #[arg(long, default_value_t = 10)]
    pub batches: usize,
    /// Lookups in each batch.
    #[arg(long, default_value_t = 1_000_000)]
    pub lookups: usize,
    /// Org ids whose shard is checked against the catalog.
    #[arg(long, default_value_t = 2_000)]
    pub check: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Minimum, median and maximum of some samples.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub samples: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut xs: Vec<f64>) -> Self {
        if xs.is_empty() {
            return Self::default();
        }
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        let median = if n % 2 == 1 {
            xs[n / 2]
        } else {
            f64::midpoint(xs[n / 2 - 1], xs[n / 2])
        };
        Self {
            samples: n,
            min: xs[0],
            median,
            max: xs[n - 1],
        }
    }

    /// (max − min) / median.
    pub fn relative(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / self.median
        } else {
            0.0
        }
    }
}

/// What `loadtest shard-map` measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardMapReport {
    /// Rows of the catalog's `org` table.
    pub orgs: i64,
    pub shards: usize,
    pub ranges: usize,
    /// Ids the ranges have handed out (`next_id − range_start`, summed).
    pub allocated: i64,
    /// `read_map`, milliseconds.
    pub read_map_ms: Spread,
    /// `ShardRouter::load`, milliseconds.
    pub router_load_ms: Spread,
    pub lookups_per_batch: usize,
    /// `ShardRouter::route`, nanoseconds per lookup (one sample per batch).
    pub route_ns: Spread,
    /// `ShardMap::locate` on the router's current map, nanoseconds per lookup.
    pub locate_ns: Spread,
    /// Org ids whose shard was checked against the catalog, and how many disagreed.
    pub checked: usize,
    pub mismatched: usize,
}

impl ShardMapReport {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "catalog: {} orgs, {} shards, {} ranges ({} ids handed out)",
            self.orgs, self.shards, self.ranges, self.allocated
        );
        let ms = |s: &Spread| {
            format!(
                "median {:.2} ms (min {:.2}, max {:.2}; {} loads)",
                s.median, s.min, s.max, s.samples
            )
        };
        let ns = |s: &Spread| {
            format!(
                "median {:.1} ns (min {:.1}, max {:.1}; {} batches of {})",
                s.median, s.min, s.max, s.samples, self.lookups_per_batch
            )
        };
        let _ = writeln!(out, "  read_map            {}", ms(&self.read_map_ms));
        let _ = writeln!(out, "  ShardRouter::load   {}", ms(&self.router_load_ms));
        let _ = writeln!(out, "  ShardRouter::route  {}", ns(&self.route_ns));
        let _ = writeln!(out, "  ShardMap::locate    {}", ns(&self.locate_ns));
        let _ = writeln!(
            out,
            "  checked {} orgs against the catalog's ranges: {} on the wrong shard",
            self.checked, self.mismatched
        );
        out
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Org ids drawn uniformly from those the ranges handed out: `(range_start, next_id)` pairs.
fn draw(allocated: &[(i64, i64)], n: usize) -> Vec<OrgId> {
    // Ids handed out before each range, and in all.
    let mut before = Vec::with_capacity(allocated.len());
    let mut total = 0;
    for (start, next) in allocated {
        before.push(total);
        total += next - start;
    }
    (0..n)
        .map(|_| {
            let k = rand::random_range(0..total);
            // The last range with fewer ids before it than k (empty ranges are skipped over).
            let i = before.partition_point(|b| *b <= k) - 1;
            OrgId(allocated[i].0 + (k - before[i]))
        })
        .collect()
}

/// Nanoseconds per call of `f` over `lookups` ids taken in turn from `ids`.
fn per_lookup(ids: &[OrgId], lookups: usize, mut f: impl FnMut(OrgId) -> usize) -> f64 {
    let started = Instant::now();
    let mut sum = 0usize;
    for i in 0..lookups {
        sum = sum.wrapping_add(f(ids[i & (IDS - 1)]));
    }
    black_box(sum);
    #[allow(
        clippy::cast_precision_loss,
        reason = "lookup counts stay far below 2^52"
    )]
    let per = started.elapsed().as_secs_f64() * 1e9 / lookups as f64;
    per
}

/// `loadtest shard-map`.
#[allow(
    clippy::print_stderr,
    reason = "progress notices of a command-line run, on stderr"
)]
pub async fn measure(cmd: &ShardMapCmd) -> anyhow::Result<String> {
    local_postgres(&cmd.catalog).context("--catalog must be a database on this machine")?;
    if !(1..=1000).contains(&cmd.loads) || !(1..=100).contains(&cmd.batches) {
        bail!("--loads must be 1 to 1000 and --batches 1 to 100");
    }
    if !(1..=100_000_000).contains(&cmd.lookups) || cmd.check > 100_000 {
        bail!("--lookups must be 1 to 100,000,000 and --check at most 100,000");
    }
    let catalog = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&cmd.catalog)
        .await
        .context("connecting to the catalog")?;
    let mut report = ShardMapReport {
        lookups_per_batch: cmd.lookups,
        ..ShardMapReport::default()
    };
    report.orgs = sqlx::query_scalar("select count(*) from org")
        .fetch_one(&catalog)
        .await?;
    let allocated: Vec<(i64, i64)> = sqlx::query_as(
        "select range_start, next_id from shard_range where next_id > range_start order by range_start",
    )
    .fetch_all(&catalog)
    .await?;
    report.allocated = allocated.iter().map(|(s, e)| e - s).sum();
    if report.allocated == 0 {
        bail!("the catalog's ranges have handed out no org id yet");
    }

    // One unmeasured read: opens the connection and warms the catalog's caches.
    let map = read_map(&catalog).await?;
    report.shards = map.shards().count();
    report.ranges = map.ranges().len();
    eprintln!(
        "shard map: {} shards, {} ranges, {} orgs in the catalog",
        report.shards, report.ranges, report.orgs
    );
    let mut times = Vec::with_capacity(cmd.loads);
    for _ in 0..cmd.loads {
        let started = Instant::now();
        black_box(read_map(&catalog).await?);
        times.push(ms(started.elapsed()));
    }
    report.read_map_ms = Spread::of(times);
    // The pools are the service's defaults (control-plane/config/defaults.toml); they
    // connect lazily, so loading opens no shard connection.
    let settings = PoolSettings {
        max_connections: 10,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(10),
        down_after: 2,
    };
    let mut times = Vec::with_capacity(cmd.loads);
    let mut router = None;
    for _ in 0..cmd.loads {
        let started = Instant::now();
        let loaded = ShardRouter::load(catalog.clone(), settings.clone()).await?;
        times.push(ms(started.elapsed()));
        router = Some(loaded);
    }
    report.router_load_ms = Spread::of(times);
    let router = router.context("at least one load")?;
    eprintln!("{}", report.human().lines().nth(2).unwrap_or_default());

    let ids = draw(&allocated, IDS);
    let routes = router.routes();
    let (mut route, mut locate) = (Vec::new(), Vec::new());
    for _ in 0..cmd.batches {
        route.push(per_lookup(&ids, cmd.lookups, |org| {
            router.route(black_box(org)).map_or(0, |h| h.name.len())
        }));
        locate.push(per_lookup(&ids, cmd.lookups, |org| {
            routes
                .map
                .locate(black_box(org))
                .map_or(0, |s| s.name.len())
        }));
    }
    report.route_ns = Spread::of(route);
    report.locate_ns = Spread::of(locate);

    // The router agrees with the catalog's ranges for orgs that exist.
    let sample: Vec<i64> = ids.iter().take(cmd.check).map(|o| o.0).collect();
    let owners: Vec<(i64, String)> = sqlx::query_as(
        "select o.id, r.shard from org o
         join shard_range r on o.id >= r.range_start and o.id < r.range_end
         where o.id = any($1)",
    )
    .bind(&sample)
    .fetch_all(&catalog)
    .await?;
    report.checked = owners.len();
    report.mismatched = owners
        .iter()
        .filter(|(id, shard)| router.route(OrgId(*id)).is_none_or(|h| &h.name != shard))
        .count();
    if report.mismatched > 0 {
        bail!(
            "{} of {} orgs are routed to another shard than the catalog's ranges say",
            report.mismatched,
            report.checked
        );
    }
    cmd.output.render(&report, || report.human())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_has_the_middle_value_or_the_mean_of_the_two() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max, s.samples), (1.0, 2.0, 3.0, 3));
        assert!((Spread::of(vec![4.0, 1.0, 2.0, 3.0]).median - 2.5).abs() < 1e-9);
        assert!((s.relative() - 1.0).abs() < 1e-9);
        assert_eq!(Spread::of(vec![]), Spread::default());
    }

    #[test]
    fn drawn_ids_were_all_handed_out() {
        let allocated = [(100, 103), (200, 200), (500, 502)];
        let ids = draw(&allocated, 1000);
        assert!(
            ids.iter()
                .all(|o| (100..103).contains(&o.0) || (500..502).contains(&o.0))
        );
        // Both ranges are drawn from.
        assert!(ids.iter().any(|o| o.0 < 200) && ids.iter().any(|o| o.0 > 200));
    }
}
