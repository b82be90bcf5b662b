//! Reading a webhook body into [`Payload`], per body, over every example payload of npm
//! `@octokit/webhooks-examples` (`npm ci --prefix tests/fixtures` first):
//! `cargo bench -p switchyard-control-plane --bench payload`. `serde_json` is what intake
//! used before `Payload::parse` (sonic-rs); both read the same fields (tests/it/intake.rs
//! checks they agree on every example).

use std::path::Path;

use control_plane::intake::event::Payload;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bodies() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json",
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `npm ci --prefix tests/fixtures`)",
            path.display()
        )
    });
    let groups: Vec<serde_json::Value> = serde_json::from_str(&text).expect("index.json parses");
    groups
        .iter()
        .flat_map(|g| g["examples"].as_array().cloned().unwrap_or_default())
        .map(|p| serde_json::to_vec(&p).expect("an example encodes"))
        .collect()
}

fn payload(c: &mut Criterion) {
    let bodies = bodies();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("payload");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("sonic_rs (Payload::parse)", |b| {
        b.iter(|| {
            for body in &bodies {
                std::hint::black_box(Payload::parse(body).expect("parses"));
            }
        });
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| {
            for body in &bodies {
                std::hint::black_box(serde_json::from_slice::<Payload>(body).expect("parses"));
            }
        });
    });
    g.finish();
}

criterion_group!(benches, payload);
criterion_main!(benches);
