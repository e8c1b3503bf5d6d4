//! One upstream request per key, however many clients ask at once.

use std::sync::atomic::Ordering;

use support::client;
use support::mirror::Mirror;
use support::registry::{publish, CrateSpec};
use support::upstream::{DlStyle, TestUpstream};

const CLIENTS: usize = 100;

/// `CLIENTS` GETs of `url` sent at once: each one's status and body.
async fn all_at_once(http: &reqwest::Client, url: &str) -> Vec<(reqwest::StatusCode, Vec<u8>)> {
    let requests = (0..CLIENTS).map(|_| {
        let http = http.clone();
        let url = url.to_string();
        tokio::spawn(async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.bytes().await.unwrap().to_vec())
        })
    });
    futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|result| result.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_misses_make_one_upstream_request_each() {
    let spec = CrateSpec::new("popular", "1.2.3").padding(256 * 1024);
    let expected = publish(&spec);
    let upstream = TestUpstream::start(
        &[spec, CrateSpec::new("indexonly", "0.1.0")],
        DlStyle::Plain,
    );
    let mirror = Mirror::builder(&upstream.url).start();
    // Learn config.json first, so only the measured requests remain.
    assert!(mirror.get("/ready").await.status().is_success());
    // Every upstream answer takes a while, so all clients arrive during the fetch.
    upstream.switches.delay_ms.store(400, Ordering::SeqCst);
    let http = client();

    let index_url = format!("{}in/de/indexonly", mirror.index_url());
    let expected_index = upstream.index_body("indexonly").unwrap();
    for (status, body) in all_at_once(&http, &index_url).await {
        assert_eq!(status, 200);
        assert_eq!(body, expected_index.as_bytes());
    }
    assert_eq!(upstream.count("/index/in/de/indexonly"), 1);

    let crate_url = format!("{}/api/v1/crates/popular/1.2.3/download", mirror.url);
    for (status, body) in all_at_once(&http, &crate_url).await {
        assert_eq!(status, 200);
        assert_eq!(body, expected.tarball);
    }
    assert_eq!(upstream.count("/dl/popular/1.2.3/download"), 1);
    assert_eq!(upstream.count("/index/po/pu/popular"), 1);
}
