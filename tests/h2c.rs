//! HTTP/2 on the plain listener: real cargo over `sparse+http` upgrades its
//! first request (`Upgrade: h2c`) and then multiplexes a whole resolve on one
//! TCP connection; curl's `--http2` and `--http2-prior-knowledge` work; a
//! request that asks for an upgrade we do not make keeps its connection alive
//! and is never answered `connection: upgrade`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use support::cargo::{project, run_ok, CargoHome};
use support::mirror::Mirror;
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

#[tokio::test]
async fn cargo_over_plain_http_resolves_and_fetches_on_one_http2_connection() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let home = CargoHome::new(&mirror.index_url());
    let app = project(&graph_project_manifest());
    let target = tempfile::tempdir().unwrap();
    run_ok(&home, app.path(), target.path(), &["generate-lockfile"]);
    run_ok(&home, app.path(), target.path(), &["fetch"]);

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
