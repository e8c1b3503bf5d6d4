//! Upstream traffic through a company's forward proxy: a real tinyproxy on
//! loopback in front of an HTTPS upstream, so index files, `config.json` and
//! `.crate` downloads cross it in `CONNECT` tunnels when `HTTPS_PROXY` is set,
//! and go direct for hosts in `NO_PROXY`.

use std::collections::BTreeSet;

use support::bench::real_index::{CrateFiles, RealIndex, RealUpstream, TestCa};
use support::mirror::Mirror;
use support::proxy::Tinyproxy;

/// An HTTPS upstream serving the real index, with one `.crate` file that its
/// index's checksum matches.
struct HttpsUpstream {
    ca: TestCa,
    upstream: RealUpstream,
    _crates: CrateFiles,
    /// `(name, version)` of the one downloadable `.crate`.
    download: (String, String),
}

fn https_upstream() -> HttpsUpstream {
    let ca = TestCa::new();
    let index = RealIndex::unpack().only(&["se/rd/serde"]);
    let serde = index
        .files()
        .remove("se/rd/serde")
        .expect("serde in the fixture");
    let last = String::from_utf8_lossy(&serde.body)
        .lines()
        .last()
        .map(str::to_string)
        .expect("a version of serde");
    let line: serde_json::Value = serde_json::from_str(&last).expect("an index line");
    let vers = line["vers"].as_str().expect("vers").to_string();
    let download = ("serde".to_string(), vers);
    let crates = CrateFiles::generate(&BTreeSet::from([download.clone()]));
    let upstream = RealUpstream::start(index.files_with_checksums(&crates), &ca);
    upstream.set_crates(&crates);
    HttpsUpstream {
        ca,
        upstream,
        _crates: crates,
        download,
    }
}

impl HttpsUpstream {
    fn mirror(&self, env: &[(&str, &str)]) -> Mirror {
        Mirror::builder(&self.upstream.index_url)
            .env("SSL_CERT_FILE", &self.ca.ca)
            .envs(env)
            .start()
    }

    /// `host:port` of the upstream, as a `CONNECT` line names it.
    fn authority(&self) -> String {
        let rest = self
            .upstream
            .index_url
            .strip_prefix("https://")
            .expect("an https upstream");
        rest.split('/').next().expect("authority").to_string()
    }
}

/// An index file, then a `.crate`, through the mirror; their statuses.
async fn fetch_both(mirror: &Mirror, download: &(String, String)) -> (u16, u16) {
    let index = mirror.get("/index/se/rd/serde").await.status().as_u16();
    let (name, vers) = download;
    let path = format!("/api/v1/crates/{name}/{vers}/download");
    let crate_file = mirror.get(&path).await;
    let status = crate_file.status().as_u16();
    if status == 200 {
        crate_file.bytes().await.expect("the .crate body");
    }
    (index, status)
}

#[tokio::test]
async fn upstream_traffic_goes_through_https_proxy() {
    let setup = https_upstream();
    let proxy = Tinyproxy::start().expect("tinyproxy");
    let mirror = setup.mirror(&[("HTTPS_PROXY", proxy.url.as_str())]);
    assert_eq!(fetch_both(&mirror, &setup.download).await, (200, 200));

    let tunnel = format!("CONNECT {} ", setup.authority());
    let requests = proxy.requests();
    assert!(
        requests.iter().any(|r| r.starts_with(&tunnel)),
        "the mirror reached the upstream through the proxy: {requests:?}"
    );
    assert!(setup.upstream.requests() >= 3, "config.json, index, .crate");
    // The start line says which proxy is in use (an operator's first check).
    let log = mirror.log();
    let started = log
        .lines()
        .find(|l| l.contains("crate-mirror started"))
        .expect("start line");
    assert!(started.contains(&proxy.url), "{started}");
}

#[tokio::test]
async fn no_proxy_hosts_go_direct() {
    let setup = https_upstream();
    let proxy = Tinyproxy::start().expect("tinyproxy");
    let mirror = setup.mirror(&[
        ("HTTPS_PROXY", proxy.url.as_str()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ]);
    assert_eq!(fetch_both(&mirror, &setup.download).await, (200, 200));
    assert_eq!(proxy.requests(), Vec::<String>::new());
    assert!(setup.upstream.requests() >= 3);
}

#[tokio::test]
async fn a_proxy_that_is_down_is_an_upstream_failure_not_a_bypass() {
    let setup = https_upstream();
    // Nothing listens here: every upstream request must fail, none may go
    // around the proxy to the upstream directly.
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let mirror = setup.mirror(&[("HTTPS_PROXY", dead.as_str())]);
    let (index, _) = fetch_both(&mirror, &setup.download).await;
    // 502 on the first failures, 503 once the circuit opens: both say the
    // upstream cannot be reached.
    assert!(
        index == 502 || index == 503,
        "an unreachable proxy is an unreachable upstream: {index}"
    );
    assert_eq!(
        setup.upstream.requests(),
        0,
        "nothing went around the proxy"
    );
}
