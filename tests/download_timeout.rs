//! `upstream-timeout` is an idle timeout for downloads: a crate body that keeps
//! coming, however slowly, is fetched whole even when it takes longer than the
//! timeout, while a body that stops for longer than the timeout is given up,
//! nothing of it is kept, and the next request fetches the crate afresh.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use support::client;
use support::mirror::Mirror;
use support::registry::{publish, sha256_hex, CrateSpec, Published};
use support::upstream::{DlStyle, TestUpstream};

/// `--upstream-timeout` given to the mirror, in seconds.
const TIMEOUT_SECS: u64 = 1;
/// The test upstream's pause before each 16 KiB chunk of a slow body: well
/// inside the timeout, so only a deadline on the whole body can cut it.
const CHUNK_DELAY_MS: u64 = 200;
/// How long a stalling body stops halfway: well past the timeout.
const STALL_MS: u64 = 4 * TIMEOUT_SECS * 1000;
/// The test upstream's chunk size.
const UPSTREAM_CHUNK: usize = 16 * 1024;
/// Only detects a hung request; every outcome here comes much sooner.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn start(crates: &[&Published]) -> (TestUpstream, Mirror) {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    for p in crates {
        upstream.add(p);
    }
    let timeout = TIMEOUT_SECS.to_string();
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--upstream-timeout", &timeout])
        .start();
    (upstream, mirror)
}

fn download_url(mirror: &Mirror, p: &Published) -> String {
    format!(
        "{}/api/v1/crates/{}/{}/download",
        mirror.url, p.name, p.vers
    )
}

/// The status, the bytes received, and whether the body ended cleanly.
async fn download(url: &str) -> (StatusCode, Vec<u8>, bool) {
    let response = client()
        .get(url)
        .timeout(HANG_GUARD)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    // A body stream ends after its first error.
    let chunks: Vec<reqwest::Result<bytes::Bytes>> = response.bytes_stream().collect().await;
    let hung = chunks
        .iter()
        .any(|c| c.as_ref().is_err_and(|e| e.is_timeout()));
    assert!(!hung, "{url}: the body hung");
    let clean = chunks.iter().all(Result::is_ok);
    let received = chunks.into_iter().flatten().flatten().collect();
    (status, received, clean)
}

/// The one stored copy of `p`, which must be its exact tarball.
fn assert_stored(mirror: &Mirror, p: &Published) {
    let stored = mirror.stored_files(&format!("{}-{}.crate", p.name, p.vers));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(std::fs::read(&stored[0]).unwrap(), p.tarball);
}

#[tokio::test]
async fn a_slow_but_steady_body_longer_than_the_timeout_is_fetched_whole() {
    let slow = publish(&CrateSpec::new("slow", "1.0.0").padding(200_000));
    // The body's pauses alone add up to more than twice the timeout.
    let chunks = slow.tarball.len().div_ceil(UPSTREAM_CHUNK) as u64;
    assert!(
        chunks * CHUNK_DELAY_MS > 2 * TIMEOUT_SECS * 1000,
        "{chunks} chunks"
    );
    let (upstream, mirror) = start(&[&slow]);
    upstream
        .switches
        .chunk_delay_ms
        .store(CHUNK_DELAY_MS, Ordering::SeqCst);

    let (status, body, clean) = download(&download_url(&mirror, &slow)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(clean, "the body broke off after {} bytes", body.len());
    assert_eq!(body.len(), slow.tarball.len());
    assert_eq!(sha256_hex(&body), slow.cksum);
    assert_stored(&mirror, &slow);
    // One fetch did it: not a retry after a cut-off first attempt.
    assert_eq!(upstream.count("/dl/slow/1.0.0/download"), 1);
}

#[tokio::test]
async fn a_body_that_stalls_past_the_timeout_fails_and_leaves_nothing_behind() {
    let stalls = publish(&CrateSpec::new("stalls", "1.0.0").padding(100_000));
    let (upstream, mirror) = start(&[&stalls]);
    upstream
        .switches
        .stall_mid_body_ms
        .store(STALL_MS, Ordering::SeqCst);
    let url = download_url(&mirror, &stalls);

    let (status, body, clean) = download(&url).await;
    // Had the mirror waited out the stall, the client would have it all.
    assert!(
        status != StatusCode::OK || !clean,
        "the stalled download was delivered ({status}, {} bytes)",
        body.len()
    );
    if status == StatusCode::OK {
        // What did arrive is the start of the real body, never a wrong one.
        assert!(body.len() < stalls.tarball.len());
        assert!(stalls.tarball.starts_with(&body));
    }
    // The fetch removes its temp file before it reports the failure.
    let mut kept = mirror.stored_files(".part");
    kept.extend(mirror.stored_files(".crate"));
    assert!(kept.is_empty(), "kept of a failed download: {kept:?}");

    // The upstream recovers: the failure poisoned nothing, the crate is fetched again.
    upstream
        .switches
        .stall_mid_body_ms
        .store(0, Ordering::SeqCst);
    let response = client()
        .get(&url)
        .timeout(HANG_GUARD)
        .send()
        .await
        .expect("request after recovery");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-cache"], "MISS");
    let body = response.bytes().await.expect("body after recovery");
    assert_eq!(sha256_hex(&body), stalls.cksum);
    assert_stored(&mirror, &stalls);
    assert_eq!(upstream.count("/dl/stalls/1.0.0/download"), 2);
}
