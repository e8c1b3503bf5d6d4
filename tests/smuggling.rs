//! Request smuggling over HTTP/1.1: a request carrying both Content-Length
//! and Transfer-Encoding (in every spelling a front proxy and the mirror
//! might read differently), duplicated Content-Lengths, obs-folded headers,
//! and the same with an h2c upgrade asked for. Each hides a second request
//! (`GET /metrics` with the metrics token, on a private mirror) in what one
//! reading calls the body. The mirror answers 400 or one well-defined
//! answer, and never answers the hidden request: a front proxy would not
//! expect that answer and would hand it to the next client.

use std::io::{Read, Write};
use std::net::TcpStream;

use support::cargo::new_token;
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

/// The responses on one connection after writing `bytes` (which end with a
/// request asking to close): each one's status line and body, in order.
fn exchange(base: &str, bytes: &[u8]) -> Vec<(u16, String)> {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    split_responses(&raw)
}

/// Splits a byte stream of HTTP/1.1 responses (each with a Content-Length
/// or chunked body) into statuses and bodies.
fn split_responses(mut raw: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut rest = &raw[end + 4..];
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let body;
        if let Some(length) = length {
            let length = length.min(rest.len());
            body = String::from_utf8_lossy(&rest[..length]).into_owned();
            rest = &rest[length..];
        } else if head.contains("transfer-encoding: chunked") {
            let mut text = Vec::new();
            loop {
                let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                    rest = &[];
                    break;
                };
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                        .unwrap_or(0);
                rest = &rest[line_end + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or(&[]);
                    break;
                }
                let size = size.min(rest.len());
                text.extend_from_slice(&rest[..size]);
                rest = rest.get(size + 2..).unwrap_or(&[]);
            }
            body = String::from_utf8_lossy(&text).into_owned();
        } else {
            body = String::from_utf8_lossy(rest).into_owned();
            rest = &[];
        }
        out.push((status, body));
        raw = rest;
    }
    out
}

/// A metrics answer: what the hidden request would get if it were served.
fn is_metrics(body: &str) -> bool {
    body.contains("crate_mirror_") || body.contains("# HELP")
}

#[test]
fn cl_te_and_duplicate_lengths_never_smuggle_a_second_request() {
    let (token, hash) = new_token();
    let (metrics_token, metrics_hash) = new_token();
    let upstream = TestUpstream::start(&[CrateSpec::new("serde", "1.0.0")], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .private(&hash)
        .args(&["--metrics-tokens", &metrics_hash])
        .start();
    // The hidden request is one the mirror would answer 200 with metrics.
    let hidden = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {metrics_token}\r\n\r\n"
    );
    let chunked_body = format!("0\r\n\r\n{hidden}");
    // The last request closes the connection, so every answer is read.
    let last = format!(
        "GET /index/se/rd/serde HTTP/1.1\r\nHost: localhost\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    let cl = chunked_body.len();
    let upgrade = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n";
    // (what, the headers framing the body, the body)
    let cases: Vec<(&str, String, String)> = vec![
        ("CL then TE", format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n"), chunked_body.clone()),
        ("TE then CL", format!("Transfer-Encoding: chunked\r\nContent-Length: {cl}\r\n"), chunked_body.clone()),
        ("CL and TE `chunked, identity`", format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked, identity\r\n"), chunked_body.clone()),
        ("CL and TE `identity, chunked`", format!("Content-Length: {cl}\r\nTransfer-Encoding: identity, chunked\r\n"), chunked_body.clone()),
        ("CL and TE ` chunked`", format!("Content-Length: {cl}\r\nTransfer-Encoding:  chunked\r\n"), chunked_body.clone()),
        ("CL and TE `chunked ` with a tab", format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\t\r\n"), chunked_body.clone()),
        ("CL and TE `Chunked`", format!("Content-Length: {cl}\r\nTransfer-Encoding: Chunked\r\n"), chunked_body.clone()),
        ("CL and TE `xchunked`", format!("Content-Length: {cl}\r\nTransfer-Encoding: xchunked\r\n"), chunked_body.clone()),
        ("CL and a space before the TE colon", format!("Content-Length: {cl}\r\nTransfer-Encoding : chunked\r\n"), chunked_body.clone()),
        ("CL and an obs-folded TE", format!("Content-Length: {cl}\r\nTransfer-Encoding:\r\n chunked\r\n"), chunked_body.clone()),
        ("CL and an obs-folded header before TE", format!("Content-Length: {cl}\r\nX-Folded: a\r\n b\r\nTransfer-Encoding: chunked\r\n"), chunked_body.clone()),
        ("CL and TE twice", format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"), chunked_body.clone()),
        ("TE identity then chunked, no CL", "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n".to_string(), chunked_body.clone()),
        ("CL and TE with an h2c upgrade", format!("Content-Length: {cl}\r\nTransfer-Encoding: chunked\r\n{upgrade}"), chunked_body.clone()),
        ("CL 0 and TE with an h2c upgrade", format!("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n{upgrade}"), chunked_body.clone()),
        // Duplicated lengths: one reading takes the first, another the last.
        ("two equal Content-Lengths", "Content-Length: 0\r\nContent-Length: 0\r\n".to_string(), hidden.clone()),
        ("two different Content-Lengths", format!("Content-Length: 0\r\nContent-Length: {}\r\n", hidden.len()), hidden.clone()),
        ("a Content-Length list", format!("Content-Length: 0, {}\r\n", hidden.len()), hidden.clone()),
        ("a Content-Length with a plus", format!("Content-Length: +{}\r\n", hidden.len()), hidden.clone()),
        ("a Content-Length in hex", "Content-Length: 0x10\r\n".to_string(), hidden.clone()),
        ("an obs-folded Content-Length", format!("Content-Length:\r\n {}\r\n", hidden.len()), hidden.clone()),
        ("a Content-Length with an h2c upgrade", format!("Content-Length: 0\r\nContent-Length: {}\r\n{upgrade}", hidden.len()), hidden.clone()),
        ("TE on HTTP/1.0", "Transfer-Encoding: chunked\r\n".to_string(), chunked_body.clone()),
    ];
    let mut refused = 0;
    for (what, framing, body) in &cases {
        let version = if what.contains("HTTP/1.0") {
            "1.0"
        } else {
            "1.1"
        };
        let request =
            format!("POST /health HTTP/{version}\r\nHost: localhost\r\n{framing}\r\n{body}{last}");
        let answers = exchange(&mirror.url, request.as_bytes());
        assert!(!answers.is_empty(), "{what}: no answer at all");
        // Never the hidden request's answer, under any reading.
        for (status, body) in &answers {
            assert!(
                !is_metrics(body),
                "{what}: the hidden GET /metrics was answered {status}: {answers:?}"
            );
        }
        // Either refused outright (400, then the connection is closed), or
        // one request with its body and then the closing one: never more
        // answers than requests a proxy sent (two).
        let first = answers[0].0;
        assert!(
            first == 400 || first == 405 || first == 200,
            "{what}: first answer {first}"
        );
        if first == 400 {
            assert_eq!(
                answers.len(),
                1,
                "{what}: answered after a 400: {answers:?}"
            );
            refused += 1;
        } else {
            assert!(answers.len() <= 2, "{what}: {answers:?}");
        }
    }
    // Every one of them holds both framings, two lengths, or a length no
    // reading agrees on: each is refused.
    assert_eq!(refused, cases.len());
    // The control: the same hidden request sent openly, pipelined, is
    // answered with metrics, so the checks above would see it served.
    let open = format!("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n{hidden}{last}");
    let answers = exchange(&mirror.url, open.as_bytes());
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(is_metrics(&answers[1].1), "{answers:?}");
    // The mirror is unharmed, and the token route still works.
    let (status, body) = exchange(&mirror.url, last.as_bytes())[0].clone();
    assert_eq!(status, 200, "{body}");
}
