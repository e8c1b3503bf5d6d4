//! Hostile HTTP/2 clients, by prior knowledge on the plain listener: an
//! HPACK bomb (a header block that decodes to far more than any limit, one
//! byte on the wire per 4 KB decoded), many streams of large headers built
//! from dynamic-table references, a CONTINUATION flood, and
//! rapid reset. Each time the mirror refuses (431/400, a reset stream, or
//! GOAWAY), its memory stays bounded, its upstream sees no flood, and it keeps
//! answering other clients.

use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use support::h2raw::{
    frame, indexed, literal, literal_indexed, request_block, rst_stream, Frame, Outcome, CANCEL,
    CONTINUATION, END_HEADERS, END_STREAM, GOAWAY, H2, HEADERS, PING,
};
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

/// A header value as large as a dynamic-table entry can hold (4096 bytes
/// with the name and the 32 bytes of overhead).
const VALUE_LEN: usize = 4000;
/// The largest frame payload a server must accept (SETTINGS_MAX_FRAME_SIZE's
/// default).
const MAX_FRAME: usize = 16_384;

fn mirror_of(upstream: &TestUpstream) -> Mirror {
    Mirror::builder(&upstream.url).start()
}

fn upstream() -> TestUpstream {
    TestUpstream::start(&[CrateSpec::new("serde", "1.0.0")], DlStyle::Plain)
}

/// The mirror still answers a new client, over HTTP/1.1 and over HTTP/2.
fn assert_still_serving(mirror: &Mirror) {
    let url = format!("{}/index/se/rd/serde", mirror.url);
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let output = std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "30",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args([flag, &url])
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "200",
            "{flag}: the mirror stopped answering\n{}",
            mirror.log_tail(20)
        );
    }
}

/// The ways a refusal may look; a 2xx (the bomb let through) is not one.
fn assert_refused(outcome: &Outcome, what: &str) {
    match outcome {
        Outcome::Answered { status, .. } => {
            assert!(*status == 431 || *status == 400, "{what} answered {status}")
        }
        Outcome::Reset(_) | Outcome::GoAway(_) | Outcome::Closed => {}
    }
}

#[tokio::test]
async fn an_hpack_bomb_is_refused_and_memory_stays_bounded() {
    let upstream = upstream();
    let mirror = mirror_of(&upstream);
    assert_still_serving(&mirror);
    let before = mirror.status_kib("VmHWM");
    let base = mirror.url.clone();
    // Four connections at once, each a block decoding to
    // (12 000 + 8 × 16 384) × 4000 bytes ≈ 570 MB: the mirror never holds
    // one, let alone four.
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let base = base.clone();
                scope.spawn(move || {
                    let mut conn = H2::connect(&base).expect("connect");
                    let mut block = request_block("GET", b"/health", &[]);
                    literal_indexed(&mut block, b"x-bomb", &[b'a'; VALUE_LEN]);
                    while block.len() < MAX_FRAME {
                        indexed(&mut block, 62);
                    }
                    let mut bytes = frame(HEADERS, END_STREAM, 1, &block);
                    let references = vec![0xbe; MAX_FRAME];
                    for i in 0..8 {
                        let flags = if i == 7 { END_HEADERS } else { 0 };
                        bytes.extend_from_slice(&frame(CONTINUATION, flags, 1, &references));
                    }
                    // The server may close before reading it all.
                    if conn.send(&bytes).is_err() {
                        return Outcome::Closed;
                    }
                    conn.outcome(1).unwrap_or(Outcome::Closed)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for outcome in &outcomes {
        assert_refused(outcome, "an HPACK bomb");
    }
    let after = mirror.status_kib("VmHWM");
    assert!(before > 0 && after > 0, "no VmHWM");
    // Generous: the HTTP/2 layer may gather up to its header list limit
    // (16 MB) per connection before it refuses.
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("VmHWM {before} KiB before, {after} KiB after the bombs ({outcomes:?})");
    assert!(grown_mib < 160, "peak RSS grew by {grown_mib} MiB");
    assert_still_serving(&mirror);
}

/// Streams whose headers are a thousand references each to one 4 KB
/// dynamic-table entry: 4 KB on the wire decode to 4 MB per stream, 48
/// streams to 192 MB if the decoded values were copied. The HTTP/2 layer
/// shares each value with the table entry and the mirror refuses the
/// request (431: more than 16 KB of headers), so its memory barely moves.
#[tokio::test]
async fn many_large_headers_by_reference_are_refused_and_memory_stays_bounded() {
    let upstream = upstream();
    let mirror = mirror_of(&upstream);
    assert_still_serving(&mirror);
    let before = mirror.status_kib("VmHWM");
    let streams = 48u32;
    let mut conn = H2::connect(&mirror.url).expect("connect");
    let mut bytes = Vec::new();
    for n in 0..streams {
        let mut block = request_block("GET", b"/index/se/rd/serde", &[]);
        if n == 0 {
            // The entry enters the table once; every later block refers to it.
            literal_indexed(&mut block, b"x-bomb", &[b'a'; VALUE_LEN]);
        }
        // (Not more per stream: a debug build's HeaderMap checks its links
        // on every removal, quadratic in the values of one name.)
        for _ in 0..1000 {
            indexed(&mut block, 62);
        }
        bytes.extend_from_slice(&frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * n, &block));
    }
    conn.send(&bytes).expect("send");
    let mut answers = Vec::new();
    for n in 0..streams {
        let outcome = conn.outcome(1 + 2 * n).expect("read");
        let gone = matches!(outcome, Outcome::GoAway(_) | Outcome::Closed);
        assert_refused(&outcome, "referenced headers");
        answers.push(outcome);
        if gone {
            break;
        }
    }
    let after = mirror.status_kib("VmHWM");
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "VmHWM {before} KiB before, {after} KiB after {streams} streams of referenced headers; answers: {:?}",
        answers.iter().map(|a| match a { Outcome::Answered { status, .. } => status.to_string(), other => format!("{other:?}") }).collect::<Vec<_>>()
    );
    assert!(
        grown_mib < 64,
        "peak RSS grew by {grown_mib} MiB for {streams} streams of referenced headers"
    );
    assert_eq!(
        upstream.count_matching("/se/rd/serde"),
        1,
        "only the warm-up fetched"
    );
    assert_still_serving(&mirror);
}

/// What a reader thread saw on a connection being flooded.
fn read_until_refused(mut conn: H2<TcpStream>, tx: mpsc::Sender<String>) {
    loop {
        match conn.read_frame() {
            Ok(Some(f @ Frame { kind: GOAWAY, .. })) => {
                let _ = tx.send(format!(
                    "goaway {:?} {}",
                    f.error_code(),
                    String::from_utf8_lossy(f.payload.get(8..).unwrap_or(&[]))
                ));
                return;
            }
            Ok(Some(Frame {
                kind: HEADERS,
                stream: 1,
                ..
            })) => {
                let _ = tx.send("answered".into());
                return;
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let _ = tx.send("closed".into());
                return;
            }
        }
    }
}

/// Sends HEADERS without END_HEADERS, then CONTINUATION frames of
/// `fragment` until the server refuses (or `budget` bytes went out); the
/// bytes sent and how the server ended it.
fn continuation_flood(base: &str, fragment: &[u8], budget: usize) -> (usize, String) {
    let conn = H2::connect(base).expect("connect");
    let mut writer = conn.stream.try_clone().expect("clone");
    writer
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || read_until_refused(conn, tx));
    let block = request_block("GET", b"/health", &[]);
    let mut sent = 0;
    let mut outcome = None;
    if std::io::Write::write_all(&mut writer, &frame(HEADERS, END_STREAM, 1, &block)).is_ok() {
        let one = frame(CONTINUATION, 0, 1, fragment);
        let batch: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * (64 * 1024 / one.len()).max(1))
            .collect();
        while sent < budget {
            if let Ok(seen) = rx.try_recv() {
                outcome = Some(seen);
                break;
            }
            if std::io::Write::write_all(&mut writer, &batch).is_err() {
                break;
            }
            sent += batch.len();
        }
    }
    let _ = writer.shutdown(std::net::Shutdown::Write);
    let outcome = outcome.unwrap_or_else(|| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| "still open".into())
    });
    reader.join().unwrap();
    (sent, outcome)
}

/// What each flood may send before it counts as never refused: 3.7 million
/// empty frames, 64 MB of full ones.
const EMPTY_BUDGET: usize = 32 << 20;
const FULL_BUDGET: usize = 64 << 20;

#[tokio::test]
async fn a_continuation_flood_is_cut_off_and_the_mirror_keeps_serving() {
    let upstream = upstream();
    let mirror = mirror_of(&upstream);
    let base = mirror.url.clone();
    let results = tokio::task::spawn_blocking(move || {
        // Empty frames (the cheapest flood: nothing to limit by size), then
        // full ones of valid literals.
        let mut full = Vec::new();
        while full.len() + 120 < MAX_FRAME {
            literal(&mut full, b"x-flood", &[b'f'; 100]);
        }
        [
            ("empty", continuation_flood(&base, &[], EMPTY_BUDGET)),
            ("full", continuation_flood(&base, &full, FULL_BUDGET)),
        ]
    })
    .await
    .unwrap();
    for (what, (sent, outcome)) in &results {
        eprintln!("{what} CONTINUATION frames: {sent} bytes sent, then {outcome}");
        assert!(
            outcome.starts_with("goaway") || outcome == "closed",
            "{what} CONTINUATION flood: {outcome} after {sent} bytes"
        );
    }
    // The bound: the flood was cut off before its budget ran out. (The
    // server refuses after about 1300 frames or 16 MB of headers; what the
    // client counts includes what the socket buffers took meanwhile.)
    assert!(
        results[0].1 .0 < EMPTY_BUDGET,
        "empty: {} bytes",
        results[0].1 .0
    );
    assert!(
        results[1].1 .0 < FULL_BUDGET,
        "full: {} bytes",
        results[1].1 .0
    );
    assert_still_serving(&mirror);
}

/// HEADERS then RST_STREAM, thousands of times over a few connections (an
/// attacker reconnects when told to go away), each for a crate no one asked
/// for before: the upstream must not see thousands of fetches.
#[tokio::test]
async fn rapid_reset_does_not_turn_into_upstream_work() {
    let upstream = upstream();
    let mirror = mirror_of(&upstream);
    let base = mirror.url.clone();
    // The control: the same kind of request, not reset, goes upstream.
    let control = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            let mut conn = H2::connect(&base).expect("connect");
            conn.request(1, &request_block("GET", b"/index/rr/zz/rrzzcontrol", &[]))
                .expect("send");
            conn.outcome(1).expect("read")
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(control, Outcome::Answered { status: 404, .. }),
        "{control:?}"
    );
    assert_eq!(upstream.count_matching("rrzzcontrol"), 1);
    let connections = 10;
    let per_connection = 500u32;
    let attempted = tokio::task::spawn_blocking(move || {
        let mut attempted = 0;
        for c in 0..connections {
            let conn = H2::connect(&base).expect("connect");
            let mut writer = conn.stream.try_clone().expect("clone");
            writer
                .set_write_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let (tx, rx) = mpsc::channel();
            let reader = std::thread::spawn(move || read_until_refused(conn, tx));
            let mut stream = 1u32;
            'connection: for _ in 0..per_connection / 50 {
                let mut batch = Vec::new();
                for _ in 0..50 {
                    let path = format!("/index/rr/{c:02}/rr{c:02}x{stream:05}");
                    let block = request_block("GET", path.as_bytes(), &[]);
                    batch.extend_from_slice(&frame(
                        HEADERS,
                        END_STREAM | END_HEADERS,
                        stream,
                        &block,
                    ));
                    batch.extend_from_slice(&rst_stream(stream, CANCEL));
                    stream += 2;
                }
                if std::io::Write::write_all(&mut writer, &batch).is_err() {
                    break 'connection;
                }
                attempted += 50;
                if rx.try_recv().is_ok() {
                    break 'connection;
                }
            }
            // A PING: once it is acknowledged (or the connection is gone),
            // every frame above was read.
            let _ = std::io::Write::write_all(&mut writer, &frame(PING, 0, 0, b"rrdone!!"));
            let _ = writer.shutdown(std::net::Shutdown::Write);
            let _ = rx.recv_timeout(Duration::from_secs(30));
            reader.join().unwrap();
        }
        attempted
    })
    .await
    .unwrap();
    // A sentinel for a new crate: answered, it went upstream after the
    // attack's streams had been read.
    let sentinel = mirror.get("/index/se/nt/sentinel").await;
    assert_eq!(sentinel.status(), 404);
    let fetched = upstream.count_matching("/rr") - 1;
    eprintln!("rapid reset: {attempted} streams opened and reset, {fetched} reached the upstream");
    assert!(attempted >= 500, "only {attempted} streams sent");
    assert!(
        fetched < 500,
        "{fetched} of {attempted} reset streams were fetched from the upstream"
    );
    assert_still_serving(&mirror);
}
