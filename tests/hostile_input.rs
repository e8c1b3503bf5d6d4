//! Hostile requests get a 4xx and never reach the filesystem or the upstream.

use std::io::{Read, Write};
use std::net::TcpStream;

use support::registry::CrateSpec;
use support::upstream_and_mirror;

/// Sends `GET {path}` byte for byte (no client-side normalisation) and returns the status.
fn raw_status(base: &str, path: &[u8]) -> u16 {
    raw_request(base, b"GET", path)
}

/// `METHOD PATH HTTP/1.1` with the bytes as given; the status, as `raw_exchange`.
fn raw_request(base: &str, method: &[u8], path: &[u8]) -> u16 {
    let mut request = method.to_vec();
    request.push(b' ');
    request.extend_from_slice(path);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    raw_exchange(base, &request)
}

#[test]
fn hostile_paths_are_4xx_and_never_reach_the_upstream() {
    let (upstream, mirror) = upstream_and_mirror(&[CrateSpec::new("serde", "1.0.0")], &[]);
    let long_name = "a".repeat(65);
    let long_version = format!("1.0.0+{}", "b".repeat(200));
    let index_paths: Vec<String> = vec![
        "/index/../../etc/passwd".into(),
        "/index/se/rd/..".into(),
        "/index/se/rd/%2e%2e".into(),
        "/index/se/rd/%2E%2E%2Fetc".into(),
        "/index/se%2frd/serde".into(),
        "/index/se/rd%2Fserde".into(),
        "/index/se/rd/ser%00de".into(),
        "/index/se/rd/serde%00".into(),
        "/index/se/rd/ser.de".into(),
        "/index/se/rd/ser de".replace(' ', "%20"),
        "/index/se/rd/sérde".into(),
        "/index/1/_".into(),
        "/index/2/1a".into(),
        "/index/3/-/-ab".into(),
        format!("/index/aa/aa/{long_name}"),
        "/index/sx/rd/serde".into(),
        "/index/1/serde".into(),
        "/index/se/serde".into(),
        "/index/se/rd/se/serde".into(),
        "/index/serde".into(),
        "/index/".into(),
        "/index//se/rd/serde".into(),
        "/index/config.json/../x".into(),
        "/index/CONFIG.JSON.bak".into(),
    ];
    let download_paths: Vec<String> = vec![
        "/api/v1/crates/serde/../../etc/passwd/download".into(),
        "/api/v1/crates/../serde/1.0.0/download".into(),
        "/api/v1/crates/%2e%2e/1.0.0/download".into(),
        "/api/v1/crates/serde/%2e%2e%2f%2e%2e/download".into(),
        "/api/v1/crates/se%2frde/1.0.0/download".into(),
        "/api/v1/crates/serde/1.0.0%2f..%2f/download".into(),
        "/api/v1/crates/serde/1.0.0%00/download".into(),
        "/api/v1/crates/ser%00de/1.0.0/download".into(),
        "/api/v1/crates/serde/1.0/download".into(),
        "/api/v1/crates/serde/latest/download".into(),
        "/api/v1/crates/serde/v1.0.0/download".into(),
        "/api/v1/crates/serde/01.0.0/download".into(),
        format!("/api/v1/crates/serde/{long_version}/download"),
        format!("/api/v1/crates/{long_name}/1.0.0/download"),
        "/api/v1/crates/1serde/1.0.0/download".into(),
        "/api/v1/crates/serde/1.0.0/download/extra".into(),
        "/api/v1/crates/serde/1.0.0".into(),
        "/api/v1/crates/serde//download".into(),
        "/api/v1/crates/serde/1.0.0/upload".into(),
        "/api/v1/crates/ser%zzde/1.0.0/download".into(),
        "/api/v1/crates/serde/1.0.0%ff/download".into(),
    ];
    // Where an escaping path would land: beside the data dir and above it.
    let parent = mirror.data_dir.parent().expect("data dir has a parent");
    let above = parent.parent().expect("temp dir has a parent");
    let escapes = [
        parent.join("etc"),
        above.join("etc/passwd"),
        above.join("passwd"),
    ];
    let existed: Vec<bool> = escapes.iter().map(|p| p.exists()).collect();
    let mut checked = 0;
    for path in index_paths.iter().chain(&download_paths) {
        let status = raw_status(&mirror.url, path.as_bytes());
        assert!((400..500).contains(&status), "{path} answered {status}");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} hostile paths");
    let asked: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.path != "/index/config.json")
        .collect();
    assert!(
        asked.is_empty(),
        "hostile requests reached the upstream: {asked:?}"
    );
    // Nothing was created outside the mirror's own layout: not inside the
    // data dir, not beside it (only the data dir and the mirror's log live
    // there), not above it.
    assert!(mirror.stored_files("passwd").is_empty());
    let beside: Vec<String> = std::fs::read_dir(parent)
        .expect("read the temp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "data" && !(name.starts_with("data.") && name.ends_with(".log")))
        .collect();
    assert!(beside.is_empty(), "created beside the data dir: {beside:?}");
    for (path, existed) in escapes.iter().zip(existed) {
        assert!(existed || !path.exists(), "created {}", path.display());
    }

    // Wrong methods are refused; the mirror is healthy afterwards.
    assert_eq!(
        raw_request(&mirror.url, b"DELETE", b"/index/se/rd/serde"),
        405
    );
    assert_eq!(
        raw_request(&mirror.url, b"PUT", b"/api/v1/crates/serde/1.0.0/download"),
        405
    );
    assert_eq!(raw_status(&mirror.url, b"/health"), 200);
    assert_eq!(raw_status(&mirror.url, b"/index/se/rd/serde"), 200);
}

/// Sends raw request bytes and returns the status (0 when the connection was
/// closed without one).
fn raw_exchange(base: &str, request: &[u8]) -> u16 {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_headers_and_request_lines_are_4xx() {
    let (_upstream, mirror) = upstream_and_mirror(&[CrateSpec::new("serde", "1.0.0")], &[]);
    let get = |headers: &str| {
        format!("GET /index/se/rd/serde HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n")
            .into_bytes()
    };
    let huge_value = "x".repeat(20_000);
    let many_headers: String = (0..200).map(|n| format!("X-Filler-{n}: {n}\r\n")).collect();
    let long_path = format!(
        "GET /index/se/rd/serde?{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "q".repeat(3000)
    );
    let cases: Vec<(&str, u16, Vec<u8>)> = vec![
        ("a 20 KB header", 431, get(&format!("X-Huge: {huge_value}\r\n"))),
        ("200 headers", 431, get(&many_headers)),
        ("a 3000-byte request target", 414, long_path.into_bytes()),
        ("a negative Content-Length", 400, get("Content-Length: -1\r\n")),
        ("two Content-Lengths", 400, get("Content-Length: 1\r\nContent-Length: 2\r\n")),
        ("a bad chunked body", 400, get("Transfer-Encoding: chunked\r\n").into_iter().chain(b"zz\r\n".to_vec()).collect()),
        ("a header without a colon", 400, get("NoColonHere\r\n")),
        ("a NUL in a header value", 400, get("X-Nul: a\0b\r\n")),
        ("a control character in a header value", 400, get("If-None-Match: \u{1}x\r\n")),
        ("an unknown HTTP version", 400, b"GET /index/se/rd/serde HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        ("a request line without a target", 400, b"GET HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a POST to the index", 405, b"POST /index/se/rd/serde HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc".to_vec()),
        ("an absolute-form target elsewhere", 404, b"GET http://elsewhere.example.com/index/se/rd/serde/../x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
    ];
    for (what, expected, request) in &cases {
        // Each refusal is the one the README promises, never a silent close
        // (status 0) or a hang.
        assert_eq!(raw_exchange(&mirror.url, request), *expected, "{what}");
    }
    // Harmless oddities are not errors: garbage conditionals and encodings.
    for headers in [
        "If-None-Match: garbage-without-quotes, W/\r\n",
        "If-Modified-Since: yesterday\r\n",
        "Accept-Encoding: gzip;q=banana, *;q=0\r\n",
    ] {
        assert_eq!(raw_exchange(&mirror.url, &get(headers)), 200, "{headers}");
    }
    assert_eq!(raw_exchange(&mirror.url, &get("")), 200);
    assert_eq!(raw_status(&mirror.url, b"/health"), 200);
}

/// Names the registry can never hold (`_foo`, `1abc`, `-x`) are crates that do
/// not exist: 404 without asking the upstream, so real cargo says "no matching
/// package" instead of failing on a 400.
#[test]
fn names_that_cannot_exist_are_404_and_cargo_says_no_matching_package() {
    use support::cargo::{project, run, CargoHome};
    let (upstream, mirror) = upstream_and_mirror(&[CrateSpec::new("serde", "1.0.0")], &[]);
    for path in [
        "/index/_f/oo/_foo",
        "/index/3/1/1ab",
        "/index/2/-x",
        "/api/v1/crates/_foo/1.0.0/download",
        "/api/v1/crates/serde/not-semver/download",
    ] {
        assert_eq!(raw_status(&mirror.url, path.as_bytes()), 404, "{path}");
    }
    let home = CargoHome::new(&mirror.index_url());
    let app = project(
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n_foo = \"1\"\n",
    );
    let target = tempfile::tempdir().unwrap();
    let output = run(&home, app.path(), target.path(), &["generate-lockfile"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no matching package named `_foo` found"),
        "{stderr}"
    );
    let asked: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("_foo"))
        .collect();
    assert!(asked.is_empty(), "asked the upstream: {asked:?}");
}
