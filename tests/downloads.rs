//! Conformance of crate downloads: hits, misses, verification, `dl` templates,
//! versions with build metadata, yanked versions, and fetches that outlive
//! their client.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use support::mirror::Mirror;
use support::registry::{publish, sha256_hex, CrateSpec};
use support::upstream::{DlStyle, TestUpstream};
use support::{client, upstream_and_mirror};

fn specs() -> Vec<CrateSpec> {
    vec![
        CrateSpec::new("serde-like", "1.0.0"),
        CrateSpec::new("buildmeta", "1.0.0+build.7"),
        CrateSpec::new("yanky", "1.0.0"),
        CrateSpec::new("yanky", "1.0.1").yanked(),
        CrateSpec::new("Inflector", "0.11.4"),
        CrateSpec::new("big", "1.0.0").padding(1 << 20),
    ]
}

fn tarball(name: &str, vers: &str) -> Vec<u8> {
    let spec = specs()
        .into_iter()
        .find(|s| s.name == name && s.vers == vers)
        .expect("spec");
    publish(&spec).tarball
}

fn download_url(mirror: &Mirror, name: &str, version: &str) -> String {
    format!("{}/api/v1/crates/{name}/{version}/download", mirror.url)
}

async fn fetch(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("request")
}

/// Downloads `name` `version` through `mirror`: a 200 with `expected` as its body.
async fn assert_downloads(mirror: &Mirror, name: &str, version: &str, expected: &[u8]) {
    let response = fetch(&download_url(mirror, name, version)).await;
    assert_eq!(response.status(), StatusCode::OK, "{name} {version}");
    assert_eq!(
        response.bytes().await.unwrap(),
        expected,
        "{name} {version}"
    );
}

#[tokio::test]
async fn a_miss_is_fetched_verified_stored_and_then_served_from_storage() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    let url = download_url(&mirror, "serde-like", "1.0.0");
    let expected = tarball("serde-like", "1.0.0");

    let miss = fetch(&url).await;
    assert_eq!(miss.status(), StatusCode::OK);
    assert_eq!(miss.headers()["content-type"], "application/gzip");
    assert_eq!(miss.headers()["x-cache"], "MISS");
    assert_eq!(miss.bytes().await.unwrap(), expected);
    let stored = mirror.stored_files("crates/se/rd/serde-like/serde-like-1.0.0.crate");
    assert_eq!(stored.len(), 1);
    assert_eq!(std::fs::read(&stored[0]).unwrap(), expected);

    let hit = fetch(&url).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(
        hit.headers()["content-length"],
        expected.len().to_string().as_str()
    );
    assert_eq!(hit.bytes().await.unwrap(), expected);
    assert_eq!(upstream.count("/dl/serde-like/1.0.0/download"), 1);

    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        expected.len().to_string().as_str()
    );
}

#[tokio::test]
async fn dl_templates_with_markers_are_honoured() {
    let upstream = TestUpstream::start(&specs(), DlStyle::Markers);
    let mirror = Mirror::builder(&upstream.url).start();
    let expected = tarball("Inflector", "0.11.4");
    assert_downloads(&mirror, "Inflector", "0.11.4", &expected).await;
    // {lowerprefix}/{crate}/{version}/{sha256-checksum}.crate, with the index's spelling.
    let path = format!(
        "/files/in/fl/Inflector/0.11.4/{}.crate",
        sha256_hex(&expected)
    );
    assert_eq!(upstream.count(&path), 1, "{:?}", upstream.seen());
}

#[tokio::test]
async fn mixed_case_names_share_one_stored_file() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    let expected = tarball("Inflector", "0.11.4");
    for name in ["Inflector", "inflector", "INFLECTOR"] {
        assert_downloads(&mirror, name, "0.11.4", &expected).await;
    }
    assert_eq!(upstream.count_matching("/dl/"), 1);
    assert_eq!(upstream.count("/dl/Inflector/0.11.4/download"), 1);
    assert_eq!(mirror.stored_files("inflector-0.11.4.crate").len(), 1);
}

#[tokio::test]
async fn build_metadata_versions_work_encoded_and_plain() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    let expected = tarball("buildmeta", "1.0.0+build.7");
    for version in ["1.0.0%2Bbuild.7", "1.0.0+build.7", "1.0.0%2bbuild.7"] {
        assert_downloads(&mirror, "buildmeta", version, &expected).await;
    }
    assert_eq!(upstream.count_matching("/dl/buildmeta/"), 1);
}

#[tokio::test]
async fn yanked_versions_still_download() {
    let (_upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    assert_downloads(&mirror, "yanky", "1.0.1", &tarball("yanky", "1.0.1")).await;
}

#[tokio::test]
async fn unknown_crates_and_versions_are_404_without_a_download_attempt() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    for (name, version) in [
        ("serde-like", "9.9.9"),
        ("nonexistent", "1.0.0"),
        ("yanky", "1.0.0-rc.1"),
    ] {
        let response = fetch(&download_url(&mirror, name, version)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{name} {version}");
    }
    assert_eq!(upstream.count_matching("/dl/"), 0);
}

#[tokio::test]
async fn a_version_published_within_the_ttl_is_found_by_revalidating() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &["--index-ttl", "600"]);
    let index = mirror.get("/index/se/rd/serde-like").await;
    assert_eq!(index.status(), StatusCode::OK);
    let newer = publish(&CrateSpec::new("serde-like", "1.1.0"));
    upstream.add(&newer);
    assert_downloads(&mirror, "serde-like", "1.1.0", &newer.tarball).await;
    assert_eq!(upstream.count("/index/se/rd/serde-like"), 2);
}

#[tokio::test]
async fn a_checksum_mismatch_is_never_stored_nor_served_whole() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    let url = download_url(&mirror, "big", "1.0.0");
    upstream
        .switches
        .corrupt_downloads
        .store(true, Ordering::SeqCst);
    let expected = tarball("big", "1.0.0");

    let response = fetch(&url).await;
    // The status may already be 200 (the body streams as it arrives), but the body
    // must break off before its end: a client never holds the whole wrong file.
    match response.status() {
        StatusCode::OK => {
            let mut received = 0usize;
            let mut stream = response.bytes_stream();
            let mut failed = false;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => received += chunk.len(),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "a corrupt body was delivered whole");
            assert!(received < expected.len());
        }
        status => assert_eq!(status, StatusCode::BAD_GATEWAY),
    }
    // The mirror counts the failure once it has cleaned up after it.
    let counted = &mirror;
    support::wait_until(
        Duration::from_secs(10),
        "no checksum failure counted",
        || async move { counted.stats().await["crates"]["checksum_failures"] == 1 },
    )
    .await;
    assert!(
        mirror.stored_files(".crate").is_empty(),
        "a corrupt crate was stored"
    );
    assert!(
        mirror.stored_files(".part").is_empty(),
        "a temp file was left behind"
    );

    // The next request, with the upstream healthy again, gets a good copy.
    upstream
        .switches
        .corrupt_downloads
        .store(false, Ordering::SeqCst);
    let response = fetch(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), expected);
    assert_eq!(mirror.stored_files(".crate").len(), 1);
}

#[tokio::test]
async fn downloads_stream_before_the_upstream_finishes_and_outlive_their_client() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    // 1 MiB in 64 chunks, 30 ms apart: about two seconds upstream.
    upstream.switches.chunk_delay_ms.store(30, Ordering::SeqCst);
    let url = download_url(&mirror, "big", "1.0.0");
    let response = fetch(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-cache"], "MISS");
    let expected_len = tarball("big", "1.0.0").len();
    assert_eq!(
        response.headers()["content-length"],
        expected_len.to_string().as_str()
    );
    let mut stream = response.bytes_stream();
    let first = stream
        .next()
        .await
        .expect("a first chunk")
        .expect("ok chunk");
    assert!(!first.is_empty());
    // Bytes arrived while the upstream is still sending: nothing is stored yet.
    assert!(
        mirror.stored_files(".crate").is_empty(),
        "the body was buffered before streaming"
    );
    drop(stream);

    // The client is gone; the fetch completes in the background.
    let mut waited = 0;
    while mirror.stored_files(".crate").is_empty() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(
        mirror.stored_files(".crate").len(),
        1,
        "the abandoned download was not finished"
    );
    let hit = fetch(&url).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.bytes().await.unwrap(), tarball("big", "1.0.0"));
    assert_eq!(upstream.count("/dl/big/1.0.0/download"), 1);
}

#[tokio::test]
async fn a_crate_of_tens_of_megabytes_streams_through() {
    let huge = publish(&CrateSpec::new("huge", "1.0.0").padding(24 << 20));
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    upstream.add(&huge);
    let mirror = Mirror::builder(&upstream.url).start();
    let expected = huge.tarball;
    assert!(expected.len() > 20 << 20);
    let url = download_url(&mirror, "huge", "1.0.0");
    for outcome in ["MISS", "HIT"] {
        let response = fetch(&url).await;
        assert_eq!(response.headers()["x-cache"], outcome);
        let body = response.bytes().await.unwrap();
        assert_eq!(sha256_hex(&body), sha256_hex(&expected), "{outcome}");
    }
}

#[tokio::test]
async fn an_upstream_error_on_a_miss_is_a_gateway_error_and_stores_nothing() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    // Cache the index file, then break the upstream for the download.
    let index = mirror.get("/index/se/rd/serde-like").await;
    assert_eq!(index.status(), StatusCode::OK);
    upstream.switches.fail_status.store(503, Ordering::SeqCst);
    let response = fetch(&download_url(&mirror, "serde-like", "1.0.0")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(mirror.stored_files(".crate").is_empty());
    assert!(mirror.stored_files(".part").is_empty());
    upstream.switches.fail_status.store(0, Ordering::SeqCst);
    let response = fetch(&download_url(&mirror, "serde-like", "1.0.0")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Hot crates are served from memory: once read, a crate file removed from
/// disk behind the mirror's back is still served, whole and unchanged, without
/// asking the upstream; with `crate-cache-size 0` the same removal is a miss.
#[tokio::test]
async fn hot_crates_are_served_from_memory() {
    let upstream = TestUpstream::start(&specs(), DlStyle::Plain);
    let expected = tarball("serde-like", "1.0.0");
    let key = "crates/se/rd/serde-like/serde-like-1.0.0.crate";
    for (args, from_memory) in [(&[][..], true), (&["--crate-cache-size", "0"][..], false)] {
        let mirror = Mirror::builder(&upstream.url).args(args).start();
        let url = download_url(&mirror, "serde-like", "1.0.0");
        let fetches_before = upstream.count("/dl/serde-like/1.0.0/download");
        assert_eq!(fetch(&url).await.bytes().await.unwrap(), expected);
        // The first hit reads the file (and keeps it when the cache is on).
        let hit = fetch(&url).await;
        assert_eq!(hit.headers()["x-cache"], "HIT");
        assert_eq!(hit.bytes().await.unwrap(), expected);
        let storage = &mirror.stats().await["storage"];
        assert_eq!(storage["memory_files"].as_u64().is_some(), from_memory);

        for file in mirror.stored_files(key) {
            std::fs::remove_file(file).unwrap();
        }
        let after = fetch(&url).await;
        assert_eq!(after.status(), StatusCode::OK);
        let expected_cache = if from_memory { "HIT" } else { "MISS" };
        assert_eq!(after.headers()["x-cache"], expected_cache);
        assert_eq!(after.bytes().await.unwrap(), expected);
        let refetched = upstream.count("/dl/serde-like/1.0.0/download") - fetches_before;
        assert_eq!(refetched, if from_memory { 1 } else { 2 });
    }
}
