//! HTTP/2 on the plain listener: real cargo over `sparse+http` upgrades its
//! first request (`Upgrade: h2c`) and then multiplexes a whole resolve on one
//! TCP connection; curl's `--http2` and `--http2-prior-knowledge` work; a
//! request that asks for an upgrade we do not make keeps its connection alive
//! and is never answered `connection: upgrade`. No upgrade is made behind a
//! proxy (real nginx that forwards `Upgrade` cannot be tunnelled past) or
//! with `h2c-upgrade off`; heads with bare LF line ends are answered; a
//! malformed `HTTP2-Settings` gets a 400, never a 101.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use support::cargo::{project, run_ok, CargoHome};
use support::mirror::Mirror;
use support::nginx::Nginx;
use support::registry::{graph_project_manifest, graph_registry};
use support::upstream::{DlStyle, TestUpstream};

/// The HTTP versions of the access log's request lines.
fn logged_versions(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("crate_mirror::access"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("version="))
        })
        .map(str::to_string)
        .collect()
}

/// Real cargo resolves and fetches the graph project through `home`'s mirror.
fn resolve_and_fetch(home: &CargoHome) {
    let app = project(&graph_project_manifest());
    let target = tempfile::tempdir().unwrap();
    run_ok(home, app.path(), target.path(), &["generate-lockfile"]);
    run_ok(home, app.path(), target.path(), &["fetch"]);
}

#[tokio::test]
async fn cargo_over_plain_http_resolves_and_fetches_on_one_http2_connection() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let home = CargoHome::new(&mirror.index_url());
    resolve_and_fetch(&home);

    let versions = logged_versions(&mirror.log());
    assert!(
        versions.len() > 10,
        "only {} requests logged",
        versions.len()
    );
    assert!(
        versions.iter().all(|v| v == "HTTP/2.0"),
        "not every request was HTTP/2: {versions:?}"
    );
    let samples = mirror.metrics().await;
    let connections = |protocol: &str| {
        samples
            .get(&format!(
                "crate_mirror_http_connections_total{{protocol=\"{protocol}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    // Each cargo command is one process with one connection; the one HTTP/1.1
    // connection is the scrape itself.
    assert_eq!(connections("h2c-upgrade"), 2.0, "{samples:?}");
    assert_eq!(connections("http1"), 1.0);
}

/// Runs curl on `urls` with `flag`; per URL, the HTTP version and how many
/// connections it opened.
fn curl(flag: &str, urls: &[&str]) -> String {
    let mut args = vec!["-s", "-w", "%{http_version} %{num_connects}\\n", flag];
    for url in urls {
        args.extend(["-o", "/dev/null", url]);
    }
    let output = Command::new("curl").args(&args).output().expect("curl");
    assert!(output.status.success(), "curl {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn curl_upgrades_and_speaks_prior_knowledge() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let config = format!("{}config.json", mirror.index_url());
    let health = format!("{}/health", mirror.url);
    // Upgrade: both requests HTTP/2, the second on the same connection.
    assert_eq!(curl("--http2", &[&config, &health]), "2 1\n2 0\n");
    assert_eq!(curl("--http2-prior-knowledge", &[&config]), "2 1\n");
    // HTTP/1.1 keeps its connection alive.
    assert_eq!(curl("--http1.1", &[&config, &health]), "1.1 1\n1.1 0\n");
    let samples = mirror.metrics().await;
    for (protocol, expected) in [
        ("h2c-upgrade", 1.0),
        ("h2c-prior-knowledge", 1.0),
        ("http1", 2.0),
    ] {
        assert_eq!(
            samples[&format!("crate_mirror_http_connections_total{{protocol=\"{protocol}\"}}")],
            expected,
            "{protocol}"
        );
    }
}

/// Reads one HTTP/1.1 response with a Content-Length from `stream`.
fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "connection closed");
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head
}

#[test]
fn an_upgrade_we_do_not_make_keeps_the_connection_alive() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let mut stream = TcpStream::connect(mirror.url.strip_prefix("http://").unwrap()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // A websocket upgrade is not made, and the connection stays open.
    for request in [
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        stream.write_all(request.as_bytes()).unwrap();
        let head = read_response(&mut stream).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: upgrade"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
    }
    let mut stream = TcpStream::connect(mirror.url.strip_prefix("http://").unwrap()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\nhi")
        .unwrap();
    // Answered as HTTP/1.1 (actix closes after a body the route did not read).
    let head = read_response(&mut stream).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("upgrade"), "{head}");
}

/// A raw connection to `mirror`, with a guard against hangs (no answer within
/// it fails the test; nothing asserts how fast an answer comes).
fn connect(mirror: &Mirror) -> TcpStream {
    let stream = TcpStream::connect(mirror.url.strip_prefix("http://").unwrap()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream
}

/// An h2c upgrade request for `/health` with these extra header lines.
fn upgrade_request(settings: &str, extra: &str) -> String {
    format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: {settings}\r\n{extra}\r\n"
    )
}

/// curl's own HTTP2-Settings (max streams 100, window 32 MiB, no push).
const CURL_SETTINGS: &str = "AAMAAABkAAQCAAAAAAIAAAAA";

/// How many connections the mirror upgraded to HTTP/2.
async fn upgraded_connections(mirror: &Mirror) -> f64 {
    mirror
        .metrics()
        .await
        .get("crate_mirror_http_connections_total{protocol=\"h2c-upgrade\"}")
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn heads_ending_in_bare_line_feeds_are_answered_at_once() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    // A request with bare LF line ends, as actix's parser accepts them.
    let mut stream = connect(&mirror);
    stream
        .write_all(b"GET /health HTTP/1.1\nHost: x\n\n")
        .unwrap();
    let head = read_response(&mut stream).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // A bare-LF upgrade head followed by a pipelined request: the bytes after
    // the head cannot be replayed as HTTP/2, so both are answered as HTTP/1.1
    // (the second one used to be swallowed by a 101).
    let mut stream = connect(&mirror);
    let pipelined = format!(
        "{}GET /index/config.json HTTP/1.1\r\nHost: x\r\n\r\n",
        upgrade_request(CURL_SETTINGS, "").replace("\r\n", "\n")
    );
    stream.write_all(pipelined.as_bytes()).unwrap();
    for _ in 0..2 {
        let head = read_response(&mut stream).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("upgrade"), "{head}");
    }
}

#[test]
fn malformed_http2_settings_are_refused_with_400() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let junk = "!".repeat(15 * 1024);
    for settings in [
        // Not base64url.
        junk.as_str(),
        "AAMAAABk+AQCAAAA",
        // Base64url, but not a whole number of 6-byte settings.
        "AAMAAAB",
        "AAMAAABkAAQ",
        // ENABLE_PUSH 2, INITIAL_WINDOW_SIZE 2^31, MAX_FRAME_SIZE 4096.
        "AAIAAAAC",
        "AASAAAAA",
        "AAUAABAA",
    ] {
        let mut stream = connect(&mirror);
        stream
            .write_all(upgrade_request(settings, "").as_bytes())
            .unwrap();
        let head = read_response(&mut stream).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 400"), "{:.40}: {head}", settings);
    }
    // Two HTTP2-Settings headers (RFC 7540 §3.2.1: exactly one).
    let mut stream = connect(&mirror);
    let twice = upgrade_request(
        CURL_SETTINGS,
        &format!("HTTP2-Settings: {CURL_SETTINGS}\r\n"),
    );
    stream.write_all(twice.as_bytes()).unwrap();
    let head = read_response(&mut stream).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 400"), "{head}");
    // Well-formed settings still upgrade (an empty list is a valid SETTINGS
    // payload).
    for settings in [CURL_SETTINGS, ""] {
        let mut stream = connect(&mirror);
        stream
            .write_all(upgrade_request(settings, "").as_bytes())
            .unwrap();
        let head = read_response(&mut stream).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{settings:?}: {head}");
    }
}

#[test]
fn upgrades_from_trusted_proxies_or_with_forwarding_headers_are_declined() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    // This test's own connections come from a trusted proxy's address.
    let behind = Mirror::builder(&upstream.url)
        .args(&["--trusted-proxies", "127.0.0.1"])
        .start();
    let mut stream = connect(&behind);
    stream
        .write_all(upgrade_request(CURL_SETTINGS, "").as_bytes())
        .unwrap();
    let head = read_response(&mut stream).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("upgrade"), "{head}");

    // From anyone else, forwarding headers say a proxy sits in between.
    let open = Mirror::builder(&upstream.url).start();
    for header in [
        "X-Forwarded-For: 192.0.2.1",
        "Forwarded: for=192.0.2.1",
        "X-Forwarded-Host: mirror.example.com",
        "X-Forwarded-Proto: https",
        "X-Real-IP: 192.0.2.1",
        "Via: 1.1 proxy.example.com",
    ] {
        let mut stream = connect(&open);
        stream
            .write_all(upgrade_request(CURL_SETTINGS, &format!("{header}\r\n")).as_bytes())
            .unwrap();
        let head = read_response(&mut stream).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{header}: {head}");
        assert!(!head.contains("upgrade"), "{header}: {head}");
    }
}

#[tokio::test]
async fn the_upgrade_can_be_turned_off_and_prior_knowledge_stays() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--h2c-upgrade", "off"])
        .start();
    let config = format!("{}config.json", mirror.index_url());
    let health = format!("{}/health", mirror.url);
    // Declined: HTTP/1.1, and the connection kept for the second request.
    assert_eq!(curl("--http2", &[&config, &health]), "1.1 1\n1.1 0\n");
    assert_eq!(curl("--http2-prior-knowledge", &[&config]), "2 1\n");
    assert_eq!(upgraded_connections(&mirror).await, 0.0);
}

/// nginx in front of `backend` as a careless front proxy: it forwards
/// `Connection` and `Upgrade` (as configs written for websockets do), keeps
/// `/metrics` to itself, and tells the mirror the client's host.
fn tunnelling_nginx(backend: &str) -> Nginx {
    let listen = support::free_port();
    let config = format!(
        r#"
events {{ worker_connections 64; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{listen};
        location = /metrics {{ return 403; }}
        location / {{
            proxy_pass {backend};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $http_connection;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#
    );
    Nginx::start(&config, listen)
        .unwrap_or_else(|why| panic!("{why} (Debian's nginx package, installed by .ci/run)"))
}

#[tokio::test]
async fn no_http2_tunnel_past_a_trusted_front_proxy() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--trusted-proxies", "127.0.0.1"])
        .start();
    let nginx = tunnelling_nginx(&mirror.url);
    let health = format!("{}/health", nginx.url);
    let metrics = format!("{}/metrics", nginx.url);
    let config = format!("{}/index/config.json", nginx.url);

    // curl asks nginx for the upgrade on its first request and sends the
    // second on the same connection: every request still goes through
    // nginx, which keeps /metrics closed.
    let output = Command::new("curl")
        .args(["-s", "--http2", "-w", "%{http_code} %{http_version}\\n"])
        .args(["-o", "/dev/null", &health, "-o", "/dev/null", &metrics])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "200 1.1\n403 1.1\n",
        "{}",
        nginx.error_log_tail(10)
    );

    // A forged X-Forwarded-Host is replaced by nginx on every request, so
    // config.json names the host the client used.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("config.json");
    let output = Command::new("curl")
        .args(["-s", "--http2", "-H", "X-Forwarded-Host: evil.example.com"])
        .args(["-o", "/dev/null", &health, "-o"])
        .arg(&saved)
        .arg(&config)
        .output()
        .expect("curl");
    assert!(output.status.success(), "{output:?}");
    let body = std::fs::read_to_string(&saved).unwrap();
    assert!(body.contains(&nginx.url), "{body}");
    assert!(!body.contains("evil.example.com"), "{body}");
    assert_eq!(upgraded_connections(&mirror).await, 0.0);
}

/// The shipped deploy/nginx/nginx.conf in front of one mirror (both of its
/// backends), with the mirror trusting it as the deployment docs ask: cargo
/// resolves and fetches through it, every request an HTTP/1.1 one at the
/// mirror (nginx speaks HTTP/1.1 to its backends and forwards no `Upgrade`).
#[tokio::test]
async fn cargo_works_through_the_shipped_nginx_config() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--trusted-proxies", "127.0.0.1"])
        .start();
    let backend = mirror.url.strip_prefix("http://").unwrap();
    let listen = support::free_port();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/nginx.conf"),
    )
    .unwrap();
    let config = shipped
        .replace("listen 8080;", &format!("listen 127.0.0.1:{listen};"))
        .replace("127.0.0.1:8081", backend)
        .replace("127.0.0.1:8082", backend);
    assert_ne!(config, shipped);
    let nginx = Nginx::start(&config, listen)
        .unwrap_or_else(|why| panic!("{why} (Debian's nginx package, installed by .ci/run)"));

    let home = CargoHome::new(&format!("{}/index/", nginx.url));
    resolve_and_fetch(&home);
    let versions = logged_versions(&mirror.log());
    assert!(
        versions.len() > 10,
        "only {} requests logged",
        versions.len()
    );
    assert!(versions.iter().all(|v| v == "HTTP/1.1"), "{versions:?}");
    assert_eq!(upgraded_connections(&mirror).await, 0.0);
}
