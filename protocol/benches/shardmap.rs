//! The in-process cost of the shard map at scale: `cargo bench -p switchyard-protocol --bench
//! shardmap` (`make bench-shards` records the results in docs/benchmarks.md).
//!
//! 1,000,000 org ids over 4 shards, in layouts an operator ends up with over time: one range
//! per shard (4), four per shard (16, the layout `loadtest/shard-bench.sh` loads), and many
//! small ranges (4,000 and 40,000), each shard's ranges interleaved with the others' as they
//! were opened in turn. Measured:
//!
//! - `locate/<ranges>`: [`ShardMap::locate`] of a random org id of the million — the binary
//!   search every org-scoped request does before touching its shard (`ShardRouter::route`
//!   adds an atomic pointer load and the clone of the shard's handle; `loadtest shard-map`
//!   measures that on a router loaded from a real catalog);
//! - `new/<ranges>`: [`ShardMap::new`] — the validation of a map read from the catalog (at
//!   start-up and at every reload), without the query.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use protocol::OrgId;
use protocol::Region;
use protocol::shardmap::{Range, Shard, ShardMap};

/// Orgs the map covers.
const ORGS: i64 = 1_000_000;
/// Shards they live on.
const SHARDS: usize = 4;
/// The first org id (ids are allocated from ranges like this one).
const FIRST_ORG: i64 = 1_000_000_000;
/// Random org ids looked up in turn (a power of two; more than fit in L1 with the map).
const LOOKUPS: usize = 1 << 16;
/// The layouts: how many ranges the million orgs are spread over.
const LAYOUTS: [usize; 4] = [4, 16, 4_000, 40_000];

fn shards() -> Vec<Shard> {
    (0..SHARDS)
        .map(|i| Shard {
            name: format!("us-east-1-{i}"),
            region: Region::new("us-east-1").expect("a valid region"),
            dsn: format!("postgres://switchyard@127.0.0.1:5432/shard_{i}"),
        })
        .collect()
}

/// `count` equal ranges covering `[FIRST_ORG, FIRST_ORG + ORGS)`, dealt to the shards in turn,
/// in the catalog's order (by `range_start`, as `read_map` reads them).
fn ranges(count: usize) -> Vec<Range> {
    let count_i64 = i64::try_from(count).expect("a small count");
    let size = ORGS / count_i64;
    (0..count_i64)
        .map(|i| Range {
            start: FIRST_ORG + i * size,
            end: if i == count_i64 - 1 {
                FIRST_ORG + ORGS
            } else {
                FIRST_ORG + (i + 1) * size
            },
            shard: format!(
                "us-east-1-{}",
                usize::try_from(i).expect("a small index") % SHARDS
            ),
        })
        .collect()
}

/// Org ids drawn uniformly from the million (splitmix64, fixed seed: the same ids every run).
fn random_orgs() -> Vec<OrgId> {
    let mut state: u64 = 0x5eed_5eed_5eed_5eed;
    let orgs = u64::try_from(ORGS).expect("positive");
    (0..LOOKUPS)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            OrgId(FIRST_ORG + i64::try_from(z % orgs).expect("below a million"))
        })
        .collect()
}

fn shardmap(c: &mut Criterion) {
    let orgs = random_orgs();

    let mut g = c.benchmark_group("locate");
    for count in LAYOUTS {
        let map = ShardMap::new(shards(), ranges(count)).expect("a valid layout");
        // Every id of the million has its shard, and it is the shard of the range holding it.
        for org in orgs.iter().take(1_000) {
            let shard = map.locate(*org).expect("every org has a shard");
            let range = map
                .ranges()
                .iter()
                .find(|r| r.contains(org.0))
                .expect("a range holds it");
            assert_eq!(shard.name, range.shard);
        }
        let mut next = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(count), &map, |b, map| {
            b.iter(|| {
                let org = orgs[next & (LOOKUPS - 1)];
                next = next.wrapping_add(1);
                black_box(map.locate(black_box(org)).map(|s| s.name.len()))
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("new");
    for count in LAYOUTS {
        let input = (shards(), ranges(count));
        g.bench_with_input(BenchmarkId::from_parameter(count), &input, |b, input| {
            b.iter_batched(
                || input.clone(),
                |(shards, ranges)| ShardMap::new(shards, ranges).expect("a valid layout"),
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, shardmap);
criterion_main!(benches);
