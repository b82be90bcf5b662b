//! The cost of an authorization decision: `cargo bench -p switchyard-control-plane --bench authz`
//! (`make bench-tenancy` records the results in docs/benchmarks.md).
//!
//! `authz::require`, the one check every handler makes, needs a live `AppState` (it reloads
//! an org's rules from the catalog when they are missing or stale). Once they are loaded, it
//! does a lock-guarded map lookup of the org's loaded version and then [`Authz::decide`]:
//! the casbin enforcer's decision, measured here with the repository's model and role
//! permissions and a realistic number of orgs loaded ([`ORGS`] × [`KEYS_PER_ORG`] `g` rules).
//! `load_org` is the in-memory part of a cache miss (replacing one org's rules), without the
//! catalog query.

use control_plane::authz::{Action, Authz};
use criterion::{Criterion, criterion_group, criterion_main};
use protocol::OrgId;

/// Orgs whose rules are loaded.
const ORGS: i64 = 5_000;
/// API keys per org (an owner and a developer): `ORGS × KEYS_PER_ORG` `g` rules.
const KEYS_PER_ORG: i64 = 2;
/// The first org id (org ids are allocated from ranges like this one).
const FIRST_ORG: i64 = 1_000_000_000;

fn key(org: i64, n: i64) -> String {
    format!("key:01J{org:012}K{n:03}")
}

fn grants(org: i64) -> Vec<(String, String)> {
    (0..KEYS_PER_ORG)
        .map(|n| {
            let role = if n == 0 { "owner" } else { "developer" };
            (key(org, n), role.to_owned())
        })
        .collect()
}

fn authz(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let authz = rt.block_on(async {
        let a = Authz::new()
            .await
            .expect("the repository's model and policy");
        for i in 0..ORGS {
            let org = FIRST_ORG + i;
            a.load_org(OrgId(org), 1, grants(org))
                .await
                .expect("loading an org's rules");
        }
        a
    });
    // An org in the middle of the loaded ones, its developer key, and another org's key.
    let org = FIRST_ORG + ORGS / 2;
    let domain = org.to_string();
    let developer = key(org, 1);
    let stranger = key(org + 1, 0);
    rt.block_on(async {
        assert!(
            authz
                .decide(&developer, &domain, Action::OrgRead)
                .await
                .expect("decide")
        );
        assert!(
            !authz
                .decide(&developer, &domain, Action::MembersWrite)
                .await
                .expect("decide")
        );
        assert!(
            !authz
                .decide(&stranger, &domain, Action::OrgRead)
                .await
                .expect("decide")
        );
        assert!(
            authz
                .decide("operator", "platform", Action::Platform)
                .await
                .expect("decide")
        );
    });

    let mut g = c.benchmark_group("authz");
    g.bench_function("member_allowed", |b| {
        b.to_async(&rt)
            .iter(|| async { authz.decide(&developer, &domain, Action::OrgRead).await });
    });
    g.bench_function("member_denied", |b| {
        b.to_async(&rt).iter(|| async {
            authz
                .decide(&developer, &domain, Action::MembersWrite)
                .await
        });
    });
    g.bench_function("other_org_denied", |b| {
        b.to_async(&rt)
            .iter(|| async { authz.decide(&stranger, &domain, Action::OrgRead).await });
    });
    g.bench_function("operator_allowed", |b| {
        b.to_async(&rt)
            .iter(|| async { authz.decide("operator", "platform", Action::Platform).await });
    });
    g.bench_function("load_org", |b| {
        b.to_async(&rt)
            .iter(|| async { authz.load_org(OrgId(org), 1, grants(org)).await });
    });
    g.finish();
}

criterion_group!(benches, authz);
criterion_main!(benches);
