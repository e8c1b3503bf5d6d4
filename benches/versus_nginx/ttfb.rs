//! The MISS measurement: time to the first body byte and to the end of a
//! large crate, directly, through a fresh mirror and through a fresh nginx.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use support::bench::{download_path, fail, index_path, release_mirror, start_mirror};
use support::mirror::Mirror;

use crate::generated::{upstream_addr, BenchRegistry};
use crate::nginx::start_nginx;
use crate::warm::{fetch_all, http_client};
use crate::{log, Options, CHUNK_DELAY_MS, REQUEST_TIMEOUT};

/// One large download, timed.
pub struct Timed {
    pub source: String,
    pub status: u16,
    pub headers: Duration,
    pub first_byte: Duration,
    pub total: Duration,
    pub bytes: usize,
    pub sha_ok: bool,
}

/// GETs `url`, timing the response head, the first body chunk and the end,
/// and checking the body against the expected sha256.
pub async fn timed_download(source: &str, url: &str, sha256: &str) -> Timed {
    let client = http_client();
    let started = Instant::now();
    let response = client
        .get(url)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| fail(&format!("GET {url}: {e}")));
    let headers = started.elapsed();
    let status = response.status().as_u16();
    let mut stream = response.bytes_stream();
    let mut first_byte = None;
    let mut hasher = Sha256::new();
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| fail(&format!("GET {url}: body: {e}")));
        if chunk.is_empty() {
            continue;
        }
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len();
        hasher.update(&chunk);
    }
    let total = started.elapsed();
    Timed {
        source: source.to_string(),
        status,
        headers,
        first_byte: first_byte.unwrap_or(total),
        total,
        bytes,
        sha_ok: hex::encode(hasher.finalize()) == sha256,
    }
}

/// `timed_download` of `path` below `base` (a mirror's or nginx's URL).
async fn timed_below(source: &str, base: &str, path: &str, sha256: &str) -> Timed {
    timed_download(source, &format!("{base}{path}"), sha256).await
}

/// A fresh release mirror of `upstream`, once it is ready.
async fn fresh_mirror(binary: &Path, upstream: &str) -> Mirror {
    let mirror = start_mirror(release_mirror(binary, upstream));
    wait_ready(&mirror.url).await;
    mirror
}

/// Polls the mirror's `/ready` until it knows the upstream's config.json, so
/// that the MISS is timed as a running mirror would serve it.
pub async fn wait_ready(base: &str) {
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let ready = client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fail("the fresh mirror was not ready within 15 s");
}

/// The large crate on a MISS: directly from the slowed upstream, through a
/// fresh mirror (without and with its index file cached) and through a fresh
/// nginx; then once more through each (HIT).
pub async fn ttfb_phase(binary: &Path, registry: &BenchRegistry, options: &Options) -> Vec<Timed> {
    let upstream = &registry.upstream;
    let (name, version, sha, _) = &registry.ttfb_crate;
    let path = download_path(name, version);
    let upstream_base = upstream.url.trim_end_matches("/index/");
    upstream
        .switches
        .chunk_delay_ms
        .store(CHUNK_DELAY_MS, Ordering::SeqCst);
    let mut timings = Vec::new();
    log("MISS: directly from the upstream");
    let direct = format!("{upstream_base}/dl/{name}/{version}/download");
    timings.push(timed_download("upstream, direct", &direct, sha).await);
    log("MISS: through a fresh mirror, index file not cached");
    let mirror = fresh_mirror(binary, &upstream.url).await;
    timings.push(
        timed_below(
            "mirror, MISS, index file not cached",
            &mirror.url,
            &path,
            sha,
        )
        .await,
    );
    // cargo resolves before it downloads, so in real use the index file is
    // usually cached when the crate is asked for: the mirror then needs one
    // upstream round trip instead of two.
    log("MISS: through a fresh mirror, index file cached");
    let second = fresh_mirror(binary, &upstream.url).await;
    let index_errors = fetch_all(&http_client(), &second.url, &[index_path(name)], false).await;
    if let Some(error) = index_errors.first() {
        fail(&format!("fetching the index file of {name}: {error}"));
    }
    timings.push(timed_below("mirror, MISS, index file cached", &second.url, &path, sha).await);
    drop(second);
    log("MISS: through a fresh nginx");
    let nginx = start_nginx(
        &options.nginx_template,
        upstream_addr(upstream),
        options.nginx_workers,
    );
    timings.push(timed_below("nginx, MISS", &nginx.url, &path, sha).await);
    // nginx renames its temp file into the cache when the upstream response
    // ends, the mirror after its checksum check: give both a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    timings.push(timed_below("mirror, HIT", &mirror.url, &path, sha).await);
    timings.push(timed_below("nginx, HIT", &nginx.url, &path, sha).await);
    upstream.switches.chunk_delay_ms.store(0, Ordering::SeqCst);
    timings
}
