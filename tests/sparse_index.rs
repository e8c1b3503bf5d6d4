//! Conformance of the sparse index: one test per point of the checklist.

use std::io::Read;
use std::time::Duration;

use reqwest::StatusCode;
use support::mirror::Mirror;
use support::registry::{publish, CrateSpec};
use support::upstream::{DlStyle, TestUpstream};
use support::{client, json_of, upstream_and_mirror};

fn specs() -> Vec<CrateSpec> {
    vec![
        CrateSpec::new("a", "1.0.0"),
        CrateSpec::new("ab", "1.0.0"),
        CrateSpec::new("abc", "1.0.0"),
        CrateSpec::new("abcd", "1.0.0"),
        CrateSpec::new("Inflector", "0.11.4"),
        CrateSpec::new("serde_JSON", "1.0.0"),
        CrateSpec::new("dash-name", "1.0.0"),
        CrateSpec::new("under_name", "1.0.0"),
    ]
}

async fn get(url: &str) -> reqwest::Response {
    client().get(url).send().await.expect("request")
}

async fn head_request(url: &str) -> reqwest::Response {
    client().head(url).send().await.expect("request")
}

/// GETs `url` with `headers` (conditional requests, `accept-encoding`).
async fn get_with(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

async fn stats(mirror: &Mirror) -> serde_json::Value {
    mirror.stats().await
}

#[tokio::test]
async fn config_json_points_dl_at_the_public_url_or_the_host() {
    let upstream = TestUpstream::start(&specs(), DlStyle::Plain);
    let public = Mirror::builder(&upstream.url)
        .args(&["--public-url", "https://mirror.example.com/"])
        .start();
    let config: serde_json::Value = public.get("/index/config.json").await.json().await.unwrap();
    assert_eq!(config["dl"], "https://mirror.example.com/api/v1/crates");
    assert!(config.get("auth-required").is_none());

    let by_host = Mirror::builder(&upstream.url).start();
    let config = json_of(
        client()
            .get(format!("{}config.json", by_host.index_url()))
            .header("host", "cache.example.com:9000"),
    )
    .await;
    assert_eq!(config["dl"], "http://cache.example.com:9000/api/v1/crates");
}

#[tokio::test]
async fn index_files_of_every_name_length_pass_through_byte_for_byte() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    for (path, name) in [
        ("1/a", "a"),
        ("2/ab", "ab"),
        ("3/a/abc", "abc"),
        ("ab/cd/abcd", "abcd"),
        ("in/fl/inflector", "Inflector"),
        ("se/rd/serde_json", "serde_JSON"),
        ("da/sh/dash-name", "dash-name"),
        ("un/de/under_name", "under_name"),
    ] {
        let response = mirror.get(&format!("/index/{path}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = response.bytes().await.unwrap();
        assert_eq!(
            body,
            upstream.index_body(name).unwrap().as_bytes(),
            "{path}"
        );
    }
    let body = mirror
        .get("/index/in/fl/inflector")
        .await
        .text()
        .await
        .unwrap();
    for field in [
        "\"x_unknown_field\":{\"kept\":[1,2,3]}",
        "\"pubtime\"",
        "\"rust_version\":\"1.60\"",
    ] {
        assert!(body.contains(field), "{field} lost: {body}");
    }
}

#[tokio::test]
async fn new_style_features_and_many_versions_survive() {
    let mut big = Vec::new();
    for minor in 0..2000 {
        big.push(
            CrateSpec::new("bigfile", &format!("0.{minor}.0"))
                .dep(support::registry::Dep::new("a", "^1").optional())
                .feature("x", &["dep:a"]),
        );
    }
    let (upstream, mirror) = upstream_and_mirror(&big, &[]);
    let expected = upstream.index_body("bigfile").unwrap();
    assert!(expected.len() > 300_000, "only {} bytes", expected.len());
    let body = mirror
        .get("/index/bi/gf/bigfile")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body, expected.as_bytes());
    assert!(expected.contains("\"features2\":{\"x\":[\"dep:a\"]}"));
}

#[tokio::test]
async fn mismatched_prefixes_are_404_and_never_reach_the_upstream() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    for path in [
        "1/ab",
        "2/abc",
        "3/b/abc",
        "ab/ce/abcd",
        "in/fl/x/inflector",
    ] {
        let response = mirror.get(&format!("/index/{path}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        upstream.count_matching("/index/") - upstream.count("/index/config.json"),
        0
    );
}

#[tokio::test]
async fn missing_crates_pass_the_upstream_status_through_and_are_cached_briefly() {
    let upstream = TestUpstream::start(&specs(), DlStyle::Plain);
    upstream.set_index("gone", 410, "");
    upstream.set_index("legal", 451, "");
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--negative-ttl", "30"])
        .start();
    for (path, status) in [
        ("no/pe/nope", StatusCode::NOT_FOUND),
        ("go/ne/gone", StatusCode::GONE),
        ("le/ga/legal", StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS),
    ] {
        for _ in 0..3 {
            let response = mirror.get(&format!("/index/{path}")).await;
            assert_eq!(response.status(), status, "{path}");
        }
        assert_eq!(
            upstream.count(&format!("/index/{path}")),
            1,
            "{path} not negatively cached"
        );
    }
    assert!(
        stats(&mirror).await["index"]["negative_hits"]
            .as_u64()
            .unwrap()
            >= 6
    );

    // How long it is remembered: tests/index_freshness.rs.
}

#[tokio::test]
async fn etag_and_last_modified_give_304s_and_head_works() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    let url = format!("{}3/a/abc", mirror.index_url());
    let first = get(&url).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let last_modified = first.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(first.headers()["vary"], "Accept-Encoding");

    let conditional = get_with(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(conditional.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(conditional.headers()["etag"].to_str().unwrap(), etag);
    assert!(conditional.bytes().await.unwrap().is_empty());

    let other = get_with(&url, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(other.status(), StatusCode::OK);

    // Cargo sends both; the ETag decides.
    let both = get_with(
        &url,
        &[
            ("if-none-match", "\"other\""),
            ("if-modified-since", &last_modified),
        ],
    )
    .await;
    assert_eq!(both.status(), StatusCode::OK);

    let since = get_with(&url, &[("if-modified-since", &last_modified)]).await;
    assert_eq!(since.status(), StatusCode::NOT_MODIFIED);
    let older = get_with(
        &url,
        &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    )
    .await;
    assert_eq!(older.status(), StatusCode::OK);

    let head = head_request(&url).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    let expected_len = upstream.index_body("abc").unwrap().len().to_string();
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        expected_len
    );
    assert!(head.bytes().await.unwrap().is_empty());
    let head_config = head_request(&format!("{}config.json", mirror.index_url())).await;
    assert_eq!(head_config.status(), StatusCode::OK);
}

#[tokio::test]
async fn gzip_is_served_to_clients_that_ask() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    let url = format!("{}ab/cd/abcd", mirror.index_url());
    let response = get_with(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["vary"], "Accept-Encoding");
    let compressed = response.bytes().await.unwrap();
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, upstream.index_body("abcd").unwrap());
    let identity = get(&url).await;
    assert!(identity.headers().get("content-encoding").is_none());
}

#[tokio::test]
async fn fresh_files_are_served_from_memory_without_the_upstream() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &["--index-ttl", "600"]);
    let url = format!("{}ab/cd/abcd", mirror.index_url());
    assert_eq!(get(&url).await.headers()["x-cache"], "MISS");
    let before = stats(&mirror).await;
    for _ in 0..20 {
        let response = get(&url).await;
        assert_eq!(response.headers()["x-cache"], "HIT");
    }
    let after = stats(&mirror).await;
    assert_eq!(upstream.count("/index/ab/cd/abcd"), 1);
    let delta =
        |key: &str| after["index"][key].as_u64().unwrap() - before["index"][key].as_u64().unwrap();
    assert_eq!(delta("memory_hits"), 20);
    assert_eq!(delta("store_loads"), 0, "the hot path read sled");
    assert_eq!(delta("upstream_fetches"), 0);
}

#[tokio::test]
async fn expired_files_are_revalidated_with_the_upstream_validators() {
    // Clients wait for the upstream past the TTL (no serving while updating).
    let (upstream, mirror) =
        upstream_and_mirror(&specs(), &["--index-ttl", "1", "--index-max-stale", "0"]);
    let url = format!("{}3/a/abc", mirror.index_url());
    let first = get(&url).await;
    let etag = first.headers()["etag"].clone();
    let last_modified = first.headers()["last-modified"].clone();
    let first_body = first.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let second = get(&url).await;
    assert_eq!(second.headers()["x-cache"], "REVALIDATED");
    assert_eq!(second.headers()["etag"], etag);
    assert_eq!(second.headers()["last-modified"], last_modified);
    assert_eq!(second.bytes().await.unwrap(), first_body);
    let requests: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.path == "/index/3/a/abc")
        .collect();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].if_none_match.is_none());
    assert!(requests[1]
        .if_none_match
        .as_deref()
        .is_some_and(|t| t.starts_with("\"up-")));
    assert_eq!(
        requests[1].if_modified_since.as_deref(),
        Some("Tue, 02 Jan 2024 03:04:05 GMT")
    );
    assert_eq!(stats(&mirror).await["index"]["upstream_not_modified"], 1);
    // New versions and yanks past the TTL: tests/index_freshness.rs.
}

#[tokio::test]
async fn within_the_ttl_the_upstream_is_not_asked() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &["--index-ttl", "600"]);
    let url = format!("{}2/ab", mirror.index_url());
    get(&url).await;
    upstream.publish_all(&[CrateSpec::new("ab", "2.0.0")]);
    let body = get(&url).await.text().await.unwrap();
    assert!(!body.contains("2.0.0"));
    assert_eq!(upstream.count("/index/2/ab"), 1);
}

#[tokio::test]
async fn stale_copies_are_served_when_the_upstream_fails() {
    // Clients wait for the upstream past the TTL (no serving while updating).
    let (mut upstream, mirror) =
        upstream_and_mirror(&specs(), &["--index-ttl", "1", "--index-max-stale", "0"]);
    let url = format!("{}ab/cd/abcd", mirror.index_url());
    let body = get(&url).await.bytes().await.unwrap();
    // A second mirror that has learnt config.json while the upstream was healthy.
    let fresh = Mirror::builder(&upstream.url).start();
    assert_eq!(fresh.get("/ready").await.status(), StatusCode::OK);

    for status in [500, 503] {
        upstream
            .switches
            .fail_status
            .store(status, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let response = get(&url).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-cache"], "STALE");
        assert_eq!(response.bytes().await.unwrap(), body);
    }
    // Two revalidations of three attempts each opened the circuit: an uncached
    // file is refused at once (503) without asking the upstream.
    let uncached = mirror.get("/index/3/a/abc").await;
    assert_eq!(uncached.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(upstream.count("/index/3/a/abc"), 0);
    // With the circuit still closed, nothing cached and the upstream failing is a
    // gateway error after the retries, not a hang.
    let uncached = fresh.get("/index/3/a/abc").await;
    assert_eq!(uncached.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.count("/index/3/a/abc"), 3, "three attempts");

    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = get(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), body);
    assert!(
        stats(&mirror).await["index"]["stale_served"]
            .as_u64()
            .unwrap()
            >= 3
    );
    // Connection refused: 502 after the retries, or 503 once those failures
    // opened the circuit (this mirror already saw three).
    let refused = fresh.get("/index/1/a").await;
    assert!(
        [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE].contains(&refused.status()),
        "{}",
        refused.status()
    );
}

#[tokio::test]
async fn a_stalled_upstream_gives_504_within_the_timeout() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &["--upstream-timeout", "1"]);
    // Let the mirror learn config.json first, then stall everything.
    assert_eq!(mirror.get("/ready").await.status(), StatusCode::OK);
    upstream
        .switches
        .delay_ms
        .store(20_000, std::sync::atomic::Ordering::SeqCst);
    // The client's own limit only guards against a hang; the mirror answers first.
    let response = client()
        .get(format!("{}1/a", mirror.index_url()))
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("the mirror hung instead of answering");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_files_survive_a_restart_without_the_upstream() {
    let mut upstream = TestUpstream::start(&specs(), DlStyle::Plain);
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let body = {
        let mut mirror = Mirror::builder(&upstream.url).data_dir(&data).start();
        let body = mirror
            .get("/index/in/fl/inflector")
            .await
            .bytes()
            .await
            .unwrap();
        // Stopped as a service manager stops it, and waited for (what a kill
        // can lose is bounded by `db-flush-interval`; the crash tests cover
        // kills).
        mirror.terminate();
        let status = tokio::task::block_in_place(|| mirror.wait_exit(Duration::from_secs(30)));
        assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
        body
    };
    upstream.stop();
    let mirror = Mirror::builder(&upstream.url).data_dir(&data).start();
    let response = mirror.get("/index/in/fl/inflector").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), body);
    assert_eq!(stats(&mirror).await["index"]["store_loads"], 1);
}

#[tokio::test]
async fn publishing_helper_appends_lines() {
    // Guards the test upstream itself: a second version adds a line.
    let upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    let p = publish(&CrateSpec::new("a", "1.0.1"));
    upstream.add(&p);
    assert_eq!(upstream.index_body("a").unwrap().lines().count(), 2);
}

#[tokio::test]
async fn expired_files_are_served_at_once_and_refreshed_in_the_background() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &["--index-ttl", "1"]);
    let url = format!("{}3/a/abc", mirror.index_url());
    let first = get(&url).await.text().await.unwrap();
    upstream.publish_all(&[CrateSpec::new("abc", "1.1.0")]);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The upstream now hangs on this file: the expired copy is still the
    // answer, at once, and a refresh is under way.
    upstream.switches.held.lock().unwrap().push("/abc".into());
    for _ in 0..3 {
        let response = tokio::time::timeout(Duration::from_secs(5), get(&url))
            .await
            .expect("served without waiting for the upstream");
        assert_eq!(response.headers()["x-cache"], "UPDATING");
        assert_eq!(response.text().await.unwrap(), first);
    }
    // One refresh for all of them.
    let asked = || upstream.count("/index/3/a/abc");
    assert_eq!(asked(), 2);
    upstream.switches.held.lock().unwrap().clear();
    // Once it lands, the new version is served fresh.
    let mut latest = String::new();
    for _ in 0..50 {
        let response = get(&url).await;
        let cache = response.headers()["x-cache"].to_str().unwrap().to_string();
        latest = response.text().await.unwrap();
        if cache == "HIT" && latest.contains("1.1.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(latest.contains("\"1.1.0\""), "{latest}");
    assert_eq!(asked(), 2);
    // The three above, and any poll before the refresh landed.
    let samples = mirror.metrics().await;
    assert!(samples["crate_mirror_index_lookups_total{result=\"updating\"}"] >= 3.0);
}

/// Our ETag of a plain index body (a hash of the plain bytes, whatever
/// encoding the upstream used: a client's cached ETag keeps matching).
fn etag_of_plain(body: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", hex::encode(&sha2::Sha256::digest(body)[..16]))
}

/// The raw sled record of `key` in a stopped mirror's data dir.
fn stored_record(data: &std::path::Path, key: &str) -> Vec<u8> {
    let db = sled::open(data.join("sled")).expect("open the mirror's sled");
    let tree = db.open_tree("index").unwrap();
    tree.get(key).unwrap().expect("record stored").to_vec()
}

async fn get_gzip(url: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn gzip_from_the_upstream_is_served_as_sent_and_stored_compressed() {
    let mut upstream = TestUpstream::start(&specs(), DlStyle::Plain);
    upstream
        .switches
        .gzip_index
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let plain = upstream.index_body("abcd").unwrap();
    let sent = support::upstream::gzip_of(plain.as_bytes());
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    {
        let mut mirror = Mirror::builder(&upstream.url).data_dir(&data).start();
        let url = format!("{}ab/cd/abcd", mirror.index_url());
        let response = get_gzip(&url).await;
        assert_eq!(response.headers()["x-cache"], "MISS");
        assert_eq!(response.headers()["content-encoding"], "gzip");
        assert_eq!(
            response.headers()["etag"],
            etag_of_plain(plain.as_bytes()).as_str()
        );
        assert_eq!(
            response.bytes().await.unwrap(),
            sent,
            "the upstream's gzip bytes, not compressed again"
        );
        let identity = get(&url).await;
        assert_eq!(
            identity.headers()["etag"],
            etag_of_plain(plain.as_bytes()).as_str()
        );
        assert_eq!(identity.text().await.unwrap(), plain);
        mirror.terminate();
        mirror.wait_exit(Duration::from_secs(10));
    }
    // sled holds the gzip bytes as the record's body.
    let record = stored_record(&data, "abcd");
    assert!(record.ends_with(&sent), "sled holds the gzip bytes");
    assert!(!record.windows(plain.len()).any(|w| w == plain.as_bytes()));
    // And a restart serves them without the upstream.
    upstream.stop();
    let mirror = Mirror::builder(&upstream.url).data_dir(&data).start();
    let url = format!("{}ab/cd/abcd", mirror.index_url());
    let response = get_gzip(&url).await;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(response.bytes().await.unwrap(), sent);
    assert_eq!(get(&url).await.text().await.unwrap(), plain);
}

#[tokio::test]
async fn broken_or_unasked_encodings_from_the_upstream_are_refused_and_trailing_bytes_dropped() {
    let (upstream, mirror) = upstream_and_mirror(&specs(), &[]);
    let raw = |name: &str, encoding: &str, bytes: Vec<u8>| {
        upstream
            .switches
            .raw_index
            .lock()
            .unwrap()
            .insert(name.to_string(), (encoding.to_string(), bytes.into()));
    };
    let plain = upstream.index_body("abcd").unwrap();
    // A flipped byte in the gzip trailer's CRC: the body is not what was sent.
    let mut broken = support::upstream::gzip_of(plain.as_bytes());
    let crc = broken.len() - 8;
    broken[crc] ^= 0x01;
    raw("abcd", "gzip", broken);
    let url = format!("{}ab/cd/abcd", mirror.index_url());
    assert_eq!(get_gzip(&url).await.status(), StatusCode::BAD_GATEWAY);
    // An encoding the mirror never asks for.
    raw("abc", "br", b"not brotli either".to_vec());
    let abc = format!("{}3/a/abc", mirror.index_url());
    assert_eq!(get_gzip(&abc).await.status(), StatusCode::BAD_GATEWAY);
    // Nothing of either was cached: once the upstream behaves, both are served.
    upstream.switches.raw_index.lock().unwrap().clear();
    let response = get_gzip(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-cache"], "MISS");
    assert_eq!(get(&abc).await.status(), StatusCode::OK);
    // Bytes after the gzip member are not passed on: the mirror compresses
    // the file itself, and what it sends decodes to exactly the file.
    let ab_plain = upstream.index_body("ab").unwrap();
    let mut trailing = support::upstream::gzip_of(ab_plain.as_bytes());
    trailing.extend_from_slice(b"trailing junk");
    raw("ab", "gzip", trailing.clone());
    let response = get_gzip(&format!("{}2/ab", mirror.index_url())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let served = response.bytes().await.unwrap();
    assert_ne!(served, trailing);
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&served[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, ab_plain);
}

#[tokio::test]
async fn index_files_stored_plain_by_earlier_versions_are_served_and_rewritten_compressed() {
    let upstream = TestUpstream::start(&specs(), DlStyle::Plain);
    let plain = upstream.index_body("abcd").unwrap();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    {
        // The record as versions before this one wrote it: a 4-byte length,
        // the JSON header (no "gzip" field) and the plain body.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let header = serde_json::json!({
            "upstream": {},
            "etag": etag_of_plain(plain.as_bytes()),
            "changed_at_ms": now_ms,
            "fetched_at_ms": now_ms,
        })
        .to_string();
        let mut value = (header.len() as u32).to_le_bytes().to_vec();
        value.extend_from_slice(header.as_bytes());
        value.extend_from_slice(plain.as_bytes());
        std::fs::create_dir_all(&data).unwrap();
        let db = sled::open(data.join("sled")).unwrap();
        db.open_tree("index")
            .unwrap()
            .insert("abcd", value)
            .unwrap();
        db.flush().unwrap();
    }
    let mirror = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .args(&["--index-ttl", "600"])
        .start();
    let url = format!("{}ab/cd/abcd", mirror.index_url());
    let response = get_gzip(&url).await;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(
        response.headers()["etag"],
        etag_of_plain(plain.as_bytes()).as_str()
    );
    let mut decoded = String::new();
    flate2::read::GzDecoder::new(&response.bytes().await.unwrap()[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);
    assert_eq!(get(&url).await.text().await.unwrap(), plain);
    assert_eq!(
        upstream.count("/index/ab/cd/abcd"),
        0,
        "served from the old record"
    );
    let mut mirror = mirror;
    mirror.terminate();
    mirror.wait_exit(Duration::from_secs(10));
    let record = stored_record(&data, "abcd");
    let header_len = u32::from_le_bytes(record[..4].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&record[4..4 + header_len]).unwrap();
    assert_eq!(header["gzip"], true, "rewritten compressed: {header}");
    let mut stored = String::new();
    flate2::read::GzDecoder::new(&record[4 + header_len..])
        .read_to_string(&mut stored)
        .unwrap();
    assert_eq!(stored, plain);
}
