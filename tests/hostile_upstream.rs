//! An upstream that misbehaves on purpose: made-up versions meant to turn every
//! download into an index fetch, redirects to servers that are not the
//! upstream, and `.crate` bodies with no Content-Length whose end must not
//! reach a client before it is verified.

mod common;

use std::time::{Duration, Instant};

use common::client;
use common::mirror::Mirror;
use common::registry::{publish, CrateSpec};
use common::upstream::{DlStyle, TestUpstream};
use reqwest::StatusCode;

/// A client's guard against hangs; every answer is expected well within it.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn download_url(mirror: &Mirror, name: &str, version: &str) -> String {
    format!("{}/api/v1/crates/{name}/{version}/download", mirror.url)
}

async fn get(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .timeout(HANG_GUARD)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[tokio::test]
async fn made_up_versions_revalidate_at_most_once_per_interval() {
    let upstream = TestUpstream::start(&[CrateSpec::new("target", "1.0.0")], DlStyle::Plain);
    let interval = Duration::from_secs(3);
    let mirror = Mirror::start(
        &upstream.url,
        &["--revalidate-interval", "3", "--index-ttl", "600"],
    );
    let index = "/index/ta/rg/target";
    let cached = get(&format!("{}ta/rg/target", mirror.index_url())).await;
    assert_eq!(cached.status(), StatusCode::OK);
    let before = upstream.count(index);
    assert_eq!(before, 1);

    // Six at once, then six one after another.
    let together = (0..6).map(|i| {
        let url = download_url(&mirror, "target", &format!("9.9.{i}"));
        async move { get(&url).await.status() }
    });
    for status in futures_util::future::join_all(together).await {
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for i in 6..12 {
        let response = get(&download_url(&mirror, "target", &format!("9.9.{i}"))).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "9.9.{i}");
    }
    let forced = upstream.count(index) - before;
    assert!(
        forced <= 1,
        "{forced} upstream index fetches for 12 made-up versions"
    );
    let made_up_done = Instant::now();
    assert_eq!(upstream.count_matching("/dl/"), 0);

    // A real version published now is found by the next forced revalidation,
    // which the interval allows again.
    let newer = publish(&CrateSpec::new("target", "1.1.0"));
    upstream.add(&newer);
    tokio::time::sleep(
        interval.saturating_sub(made_up_done.elapsed()) + Duration::from_millis(500),
    )
    .await;
    let response = get(&download_url(&mirror, "target", "1.1.0")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), newer.tarball);
    assert_eq!(upstream.count(index) - before, forced + 1);
}
