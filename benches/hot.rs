//! Criterion micro-benchmarks of the request path's hot functions: route parsing, repository and
//! reference parsing, `Range` handling, and SHA-256 throughput as a fill feeds it (this CPU's SHA
//! extensions are used when present). Run with `scripts/bench.sh micro` (`cargo bench --bench
//! hot`).
// Tests and benchmarks run on their own threads, where a blocking sleep is the point.
#![allow(clippy::disallowed_methods)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use entrepot::hot_paths;
use std::hint::black_box;

const DIGEST: &str = "sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54b";

fn routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for (name, path) in [
        (
            "manifest by tag",
            "/v2/library/debian/manifests/bookworm-slim".to_owned(),
        ),
        ("blob", format!("/v2/library/debian/blobs/{DIGEST}")),
        (
            "deep name",
            "/v2/org/team/blobs/app/manifests/v1.2.3".to_owned(),
        ),
        ("base", "/v2/".to_owned()),
    ] {
        g.bench_function(name, |b| b.iter(|| hot_paths::route(black_box(&path))));
    }
    g.finish();
}

fn references(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    g.bench_function("name and tag", |b| {
        b.iter(|| hot_paths::reference(black_box("library/debian"), black_box("bookworm-slim")))
    });
    g.bench_function("name and digest", |b| {
        b.iter(|| hot_paths::reference(black_box("org/team/app"), black_box(DIGEST)))
    });
    g.finish();
}

fn ranges(c: &mut Criterion) {
    let mut g = c.benchmark_group("range");
    for value in [
        "bytes=1048576-",
        "bytes=0-1023",
        "bytes=-500",
        "bytes=5-2,7-9",
    ] {
        g.bench_function(value, |b| {
            b.iter(|| hot_paths::range(black_box(value), black_box(134_217_728)))
        });
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = vec![0x5au8; 8 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(20);
    for chunk in [16 << 10, 256 << 10] {
        g.bench_with_input(
            BenchmarkId::new("8 MiB in chunks of KiB", chunk >> 10),
            &chunk,
            |b, &chunk| b.iter(|| hot_paths::sha256(black_box(&data), chunk)),
        );
    }
    g.finish();
}

criterion_group!(hot, routes, references, ranges, hashing);
criterion_main!(hot);
