//! An upstream that misbehaves on purpose: made-up versions meant to turn every
//! download into an index fetch, redirects to servers that are not the
//! upstream, and `.crate` bodies with no Content-Length whose end must not
//! reach a client before it is verified.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use support::faults::{Chunking, Reply, ScriptedServer};
use support::mirror::Mirror;
use support::registry::{publish, CrateSpec, Published};
use support::upstream::{DlStyle, TestUpstream};

/// A client's guard against hangs; every answer is expected well within it.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn download_url(mirror: &Mirror, name: &str, version: &str) -> String {
    format!("{}/api/v1/crates/{name}/{version}/download", mirror.url)
}

async fn get(url: &str) -> reqwest::Response {
    support::get_within(url, HANG_GUARD).await
}

/// Reads a body until it ends or fails: the bytes received, and whether it
/// ended cleanly.
async fn read_body(response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(_) => return (received, false),
        }
    }
    (received, true)
}

/// A scripted upstream serving `crates` (index files under `/index/`, `dl` =
/// `{base}/dl`); downloads are left to each test to script.
fn scripted_upstream(crates: &[&Published]) -> ScriptedServer {
    let upstream = ScriptedServer::start();
    upstream.route(
        "/index/config.json",
        Reply::ok(format!("{{\"dl\":\"{}/dl\"}}", upstream.base)),
    );
    for p in crates {
        upstream.route(&index_path(&p.name), Reply::ok(format!("{}\n", p.line)));
    }
    upstream
}

/// The sparse index path of a crate (names of 4 or more letters in these tests).
fn index_path(name: &str) -> String {
    assert!(name.len() >= 4, "{name}");
    format!("/index/{}/{}/{name}", &name[..2], &name[2..4])
}

fn dl_path(p: &Published) -> String {
    format!("/dl/{}/{}/download", p.name, p.vers)
}

fn upstream_url(server: &ScriptedServer) -> String {
    format!("{}/index/", server.base)
}

/// The value of a metric line (name with labels, exactly as exposed).
async fn metric(mirror: &Mirror, series: &str) -> Option<f64> {
    let text = get(&format!("{}/metrics", mirror.url))
        .await
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn made_up_versions_revalidate_at_most_once_per_interval() {
    let upstream = TestUpstream::start(&[CrateSpec::new("target", "1.0.0")], DlStyle::Plain);
    let interval = Duration::from_secs(3);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--revalidate-interval", "3", "--index-ttl", "600"])
        .start();
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

#[tokio::test]
async fn redirects_to_other_hosts_are_refused() {
    let p = publish(&CrateSpec::new("redir", "1.0.0"));
    let upstream = scripted_upstream(&[&p]);
    let other = ScriptedServer::start();
    let secret = b"SECRET BODY OF ANOTHER SERVER ON THIS MACHINE".to_vec();
    other.route("/secret", Reply::ok(secret.clone()));
    upstream.route(
        &dl_path(&p),
        Reply::redirect(&format!("{}/secret", other.base)),
    );
    // Another loopback port is another host; listing a third one changes nothing.
    let mirror = Mirror::builder(&upstream_url(&upstream))
        .args(&[
            "--upstream-redirect-hosts",
            "127.0.0.1:9,mirror.example.com",
        ])
        .start();

    let response = get(&download_url(&mirror, "redir", "1.0.0")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.bytes().await.unwrap();
    assert!(
        !body.windows(secret.len()).any(|w| w == secret.as_slice()),
        "the other server's body reached the client"
    );
    // The client learns that a redirect was refused, not where it led: the
    // target (another service on the upstream's network) is for the log.
    let other_port = other.base.rsplit(':').next().unwrap().trim_end_matches('/');
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("upstream-redirect-hosts") && !text.contains(other_port),
        "the 502 body names the refused target: {text:?}"
    );
    assert!(
        mirror
            .log()
            .lines()
            .any(|l| l.contains("upstream redirect refused") && l.contains(other_port)),
        "the log does not name the refused target: {}",
        mirror.log()
    );
    assert_eq!(other.total_hits(), 0, "the mirror asked the other server");
    assert_eq!(
        upstream.hits(&dl_path(&p)),
        1,
        "a refused redirect was retried"
    );
    assert_eq!(
        metric(
            &mirror,
            "crate_mirror_upstream_redirects_refused_total{reason=\"host\"}"
        )
        .await,
        Some(1.0)
    );
    assert!(
        mirror.log().contains("upstream redirect refused"),
        "{}",
        mirror.log()
    );
    assert!(mirror.stored_files(".crate").is_empty());
}

#[tokio::test]
async fn redirects_to_listed_hosts_are_followed() {
    let p = publish(&CrateSpec::new("listed", "1.0.0"));
    let upstream = scripted_upstream(&[&p]);
    let files = ScriptedServer::start();
    files.route("/files/listed.crate", Reply::ok(p.tarball.clone()));
    upstream.route(
        &dl_path(&p),
        Reply::redirect(&format!("{}/files/listed.crate", files.base)),
    );
    let listed = format!("127.0.0.1:{}", files.port);
    let mirror = Mirror::builder(&upstream_url(&upstream))
        .args(&["--upstream-redirect-hosts", &listed])
        .start();
    let response = get(&download_url(&mirror, "listed", "1.0.0")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), p.tarball);
    assert_eq!(files.hits("/files/listed.crate"), 1);
    assert_eq!(
        metric(
            &mirror,
            "crate_mirror_upstream_redirects_refused_total{reason=\"host\"}"
        )
        .await,
        // Present from the start (label values are initialised), and never counted.
        Some(0.0)
    );
}

#[tokio::test]
async fn redirect_chains_longer_than_five_are_refused() {
    // Both chains stay on the upstream's own host: only their length differs.
    let five = publish(&CrateSpec::new("five", "1.0.0"));
    let six = publish(&CrateSpec::new("sixx", "1.0.0"));
    let upstream = scripted_upstream(&[&five, &six]);
    for (p, hops) in [(&five, 5), (&six, 6)] {
        let hop = |k: usize| format!("/hops/{}/{k}", p.name);
        upstream.route(
            &dl_path(p),
            Reply::redirect(&format!("{}{}", upstream.base, hop(1))),
        );
        for k in 1..hops {
            upstream.route(
                &hop(k),
                Reply::redirect(&format!("{}{}", upstream.base, hop(k + 1))),
            );
        }
        upstream.route(&hop(hops), Reply::ok(p.tarball.clone()));
    }
    let mirror = Mirror::builder(&upstream_url(&upstream)).start();

    let response = get(&download_url(&mirror, "five", "1.0.0")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), five.tarball);

    let response = get(&download_url(&mirror, "sixx", "1.0.0")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_ne!(response.bytes().await.unwrap(), six.tarball);
    assert_eq!(
        upstream.hits("/hops/sixx/6"),
        0,
        "the sixth redirect was followed"
    );
    assert_eq!(
        metric(
            &mirror,
            "crate_mirror_upstream_redirects_refused_total{reason=\"too_many\"}"
        )
        .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn unknown_length_bodies_hold_back_the_tail() {
    let p = publish(&CrateSpec::new("chunky", "1.0.0").padding(100_000));
    let upstream = scripted_upstream(&[&p]);
    let mut corrupt = p.tarball.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    // The whole body arrives long before it ends: a mirror that released every
    // byte it had would hand the client the complete bad file meanwhile.
    let chunking = Chunking {
        size: 16 * 1024,
        pause: Duration::from_millis(50),
        tail_pause: Duration::from_millis(1500),
    };
    upstream.route(&dl_path(&p), Reply::ok(corrupt.clone()).chunked(chunking));
    let mirror = Mirror::builder(&upstream_url(&upstream)).start();
    let url = download_url(&mirror, "chunky", "1.0.0");

    let response = get(&url).await;
    match response.status() {
        StatusCode::OK => {
            assert!(response.headers().get("content-length").is_none());
            let (received, clean) = read_body(response).await;
            assert!(!clean, "a corrupt body ended cleanly");
            assert!(
                received.len() < corrupt.len(),
                "the client got all {} bytes of the corrupt body",
                received.len()
            );
            assert_ne!(received, corrupt);
        }
        status => assert_eq!(status, StatusCode::BAD_GATEWAY),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        mirror.stored_files(".crate").is_empty(),
        "a corrupt crate was stored"
    );

    // The good body, sent the same way, arrives whole and is kept.
    upstream.route(&dl_path(&p), Reply::ok(p.tarball.clone()).chunked(chunking));
    let response = get(&url).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (received, clean) = read_body(response).await;
    assert!(clean);
    assert_eq!(received, p.tarball);
    let hit = get(&url).await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.bytes().await.unwrap(), p.tarball);
}
