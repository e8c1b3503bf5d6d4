//! Criterion micro-benchmarks of the hot path, a fresh index hit: parsing the
//! client's path, the in-memory cache lookup, and building the response (plain
//! and gzip, 200 and 304). Run with `cargo bench --bench hot_path`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crate_mirror::index::cache::{IndexCache, IndexPolicy};
use crate_mirror::index::path::parse_index_path;
use crate_mirror::index::store::{IndexStore, StoredHeader, StoredIndex};
use crate_mirror::metrics::Metrics;
use crate_mirror::names::CrateName;
use crate_mirror::upstream::{UpstreamClient, Validators};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// An index file of `versions` lines in the upstream's style (~230 bytes each).
fn index_body(name: &str, versions: usize) -> Bytes {
    let mut body = String::new();
    for v in 0..versions {
        body.push_str(&format!(
            "{{\"name\":\"{name}\",\"vers\":\"0.{v}.0\",\"deps\":[{{\"name\":\"dep\",\"req\":\"^1\",\"features\":[],\"optional\":false,\"default_features\":true,\"target\":null,\"kind\":\"normal\"}}],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
            "ab".repeat(32)
        ));
    }
    Bytes::from(body)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A cache whose sled store holds fresh copies; the first lookup moves each
/// into memory, every later one is the hot path.
fn warm_cache(
    runtime: &tokio::runtime::Runtime,
    files: &[(&str, usize)],
) -> (IndexCache, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let store = IndexStore::open(&db).unwrap();
    for (name, versions) in files {
        let body = index_body(name, *versions);
        let record = StoredIndex {
            header: StoredHeader {
                upstream: Validators::default(),
                etag: format!("\"{name}\""),
                changed_at_ms: now_ms(),
                fetched_at_ms: now_ms(),
                gzip: false,
                plain_len: None,
                upstream_gzip: false,
            },
            body,
            gzip: None,
        };
        store.save(name, &record).unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    // Never contacted: every file is fresh.
    let upstream = Arc::new(
        UpstreamClient::new(
            "http://127.0.0.1:9/".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(3600),
            4,
            metrics.clone(),
        )
        .unwrap(),
    );
    let policy = IndexPolicy {
        ttl: Duration::from_secs(3600),
        max_stale: Duration::ZERO,
        negative_ttl: Duration::from_secs(30),
        hot_cache_bytes: 256 << 20,
    };
    let cache = IndexCache::new(store, upstream, policy, metrics);
    for (name, _) in files {
        runtime
            .block_on(cache.get(&CrateName::parse(name).unwrap()))
            .unwrap();
    }
    (cache, dir)
}

fn path_parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_index_path");
    for path in ["se/rd/serde", "3/a/abc", "wi/nd/windows-sys", "config.json"] {
        group.bench_with_input(BenchmarkId::from_parameter(path), path, |b, path| {
            b.iter(|| parse_index_path(std::hint::black_box(path)).unwrap())
        });
    }
    group.finish();
}

fn cache_lookup(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cache, _dir) = warm_cache(&runtime, &[("serde", 300), ("small", 3)]);
    let name = CrateName::parse("serde").unwrap();
    c.bench_function("index_cache_hot_get", |b| {
        b.iter(|| {
            runtime
                .block_on(cache.get(std::hint::black_box(&name)))
                .unwrap()
        })
    });
}

fn response_building(c: &mut Criterion) {
    use actix_web::test::TestRequest;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cache, _dir) = warm_cache(&runtime, &[("serde", 300)]);
    let name = CrateName::parse("serde").unwrap();
    let lookup = runtime.block_on(cache.get(&name)).unwrap();
    let etag = lookup.entry.file().expect("serde is found").etag.clone();
    // What the handler hands over for a client without gzip (from the cache
    // of recent plain bodies).
    let plain = runtime.block_on(cache.plain(&lookup.entry)).unwrap();
    let mut group = c.benchmark_group("index_response");
    let cases = [
        ("plain_200", TestRequest::default().to_http_request()),
        (
            "gzip_200",
            TestRequest::default()
                .insert_header(("accept-encoding", "gzip"))
                .to_http_request(),
        ),
        (
            "etag_304",
            TestRequest::default()
                .insert_header(("if-none-match", etag.as_str()))
                .to_http_request(),
        ),
    ];
    for (label, request) in &cases {
        group.bench_function(*label, |b| {
            b.iter(|| {
                crate_mirror::http::index_response(request, lookup.clone(), Some(plain.clone()))
            })
        });
    }
    group.finish();
}

criterion_group!(hot_path, path_parsing, cache_lookup, response_building);
criterion_main!(hot_path);
