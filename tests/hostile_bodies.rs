//! Request bodies that stall, trickle or overflow: the git index's upload-pack
//! (the one route that reads a body) answers 408 or closes the connection within
//! its body timeout and 413 past its size limit, and still serves real git; the
//! other routes refuse a body without waiting for it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};
use support::{client, git_ok};

/// The mirror's body timeout is 10 s; this leaves a generous margin for a
/// loaded machine, and is far below the 40 s the issue saw.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// What a connection gave back.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A response's status line.
    Status(u16),
    /// The server closed (or reset) the connection without a response.
    Closed,
    /// Nothing before the limit.
    Nothing,
}

/// Reads from `stream` until a status line arrives, the connection ends, or
/// `limit` passes.
fn answer_within(stream: &mut TcpStream, limit: Duration) -> Answer {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Answer::Nothing;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if received.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Answer::Nothing
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&received);
    match text.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(status) => Answer::Status(status),
        None => Answer::Closed,
    }
}

fn connect(base: &str) -> TcpStream {
    TcpStream::connect(base.strip_prefix("http://").unwrap()).unwrap()
}

fn post_head(path: &str, headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-git-upload-pack-request\r\n{headers}\r\n"
    )
    .into_bytes()
}

/// A connection that has sent an upload-pack request's head declaring a body
/// of `length` bytes, and none of the body.
fn post_declaring(base: &str, length: usize) -> TcpStream {
    let mut stream = connect(base);
    stream
        .write_all(&post_head(
            upload_pack_path(),
            &format!("Content-Length: {length}\r\n"),
        ))
        .unwrap();
    stream
}

/// A test upstream serving `specs` (serde among them), and a mirror of it
/// with the git index holding serde's index file.
async fn git_mirror(specs: &[CrateSpec]) -> (TestUpstream, Mirror) {
    let upstream = TestUpstream::start(specs, DlStyle::Plain);
    let mirror = Mirror::start_git(&upstream.url, "0", "/index/se/rd/serde").await;
    (upstream, mirror)
}

/// Runs `exchange` (blocking socket work) with the mirror's base URL on the
/// blocking pool, so the test's runtime stays free; its result.
async fn blocking<T: Send + 'static>(
    mirror: &Mirror,
    exchange: impl FnOnce(String) -> T + Send + 'static,
) -> T {
    let base = mirror.url.clone();
    tokio::task::spawn_blocking(move || exchange(base))
        .await
        .unwrap()
}

/// A connection that has sent a POST to `path` declaring a body of 1000
/// bytes, and one byte of it.
fn post_one_byte_of_1000(base: &str, path: &str) -> TcpStream {
    let mut stream = connect(base);
    let mut request = post_head(path, "Content-Length: 1000\r\n");
    request.push(b'0');
    stream.write_all(&request).unwrap();
    stream
}

fn upload_pack_path() -> &'static str {
    "/git/index/git-upload-pack"
}

#[tokio::test]
async fn a_stalled_or_trickling_upload_pack_body_is_cut_off() {
    let (_upstream, mirror) = git_mirror(&[CrateSpec::new("serde", "1.0.0")]).await;

    let outcomes = blocking(&mirror, |base| {
        // One byte of a promised thousand, then nothing.
        let stalled = std::thread::spawn({
            let base = base.clone();
            move || {
                let mut stream = post_one_byte_of_1000(&base, upload_pack_path());
                let started = Instant::now();
                (answer_within(&mut stream, ANSWER_WITHIN), started.elapsed())
            }
        });
        // A byte every half second: never idle, never done. A per-read idle
        // timeout would let this hold the connection for 500 s.
        let trickling = std::thread::spawn({
            let base = base.clone();
            move || {
                let stream = connect(&base);
                let mut writer = stream.try_clone().unwrap();
                writer
                    .write_all(&post_head(upload_pack_path(), "Content-Length: 1000\r\n"))
                    .unwrap();
                let started = Instant::now();
                let feeder = std::thread::spawn(move || {
                    for _ in 0..60 {
                        if writer.write_all(b"0").is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                });
                let mut reader = stream;
                let answer = answer_within(&mut reader, ANSWER_WITHIN);
                let elapsed = started.elapsed();
                // Ends the feeder's writes at once.
                let _ = reader.shutdown(std::net::Shutdown::Both);
                let _ = feeder.join();
                (answer, elapsed)
            }
        });
        [stalled.join().unwrap(), trickling.join().unwrap()]
    })
    .await;
    for ((answer, elapsed), what) in outcomes.into_iter().zip(["stalled", "trickling"]) {
        assert!(
            answer == Answer::Status(408) || answer == Answer::Closed,
            "a {what} body got {answer:?} after {elapsed:?}"
        );
    }

    // The mirror is fine afterwards.
    let health = mirror.get("/health").await;
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn oversized_upload_pack_bodies_get_413() {
    let (_upstream, mirror) = git_mirror(&[CrateSpec::new("serde", "1.0.0")]).await;

    // Refused on the declared length, before any of the body is sent.
    let declared = blocking(&mirror, |base| {
        let mut stream = post_declaring(&base, 9 << 20);
        answer_within(&mut stream, ANSWER_WITHIN)
    })
    .await;
    assert_eq!(declared, Answer::Status(413));

    // Sent, with and without a length up front (chunked). The sized body is
    // written by its own thread while this one reads: the mirror answers 413
    // on the declared length and closes with the body still arriving, which
    // resets the connection, so a client that reads only after writing it all
    // (as reqwest does) may never see the 413 it was sent.
    let sized = blocking(&mirror, |base| {
        let mut stream = post_declaring(&base, 9 << 20);
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            // Fails once the mirror has closed: expected.
            let _ = writer.write_all(&vec![b'0'; 9 << 20]);
        });
        let answer = answer_within(&mut stream, ANSWER_WITHIN);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = sender.join();
        answer
    })
    .await;
    assert_eq!(sized, Answer::Status(413));
    let url = format!("{}{}", mirror.url, upload_pack_path());
    let chunks = (0..9).map(|_| Ok::<_, std::io::Error>(vec![b'0'; 1 << 20]));
    let chunked = client()
        .post(&url)
        .header("content-type", "application/x-git-upload-pack-request")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);

    // A gzip body that inflates past the decoded limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&vec![b'0'; 65 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let inflated = client()
        .post(&url)
        .header("content-type", "application/x-git-upload-pack-request")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(inflated.status(), 413);
}

#[tokio::test]
async fn routes_that_take_no_body_refuse_one_without_waiting_for_it() {
    let (_upstream, mirror) = git_mirror(&[CrateSpec::new("serde", "1.0.0")]).await;
    let answers = blocking(&mirror, |base| {
        [
            "/index/se/rd/serde",
            "/api/v1/crates/serde/1.0.0/download",
            "/api/stats",
            "/metrics",
            "/health",
            "/",
            "/git/index/info/refs?service=git-upload-pack",
            "/git/index/git-receive-pack",
            "/elsewhere",
        ]
        .map(|path| {
            let mut stream = post_one_byte_of_1000(&base, path);
            // Well before any body timeout: these never wait for the body.
            (path, answer_within(&mut stream, Duration::from_secs(5)))
        })
    })
    .await;
    for (path, answer) in answers {
        assert!(
            matches!(answer, Answer::Status(status) if (400..500).contains(&status)),
            "POST {path} with a stalled body: {answer:?}"
        );
    }
}

#[tokio::test]
async fn git_clones_and_fetches_still_work() {
    let (_upstream, mirror) = git_mirror(&[
        CrateSpec::new("serde", "1.0.0"),
        CrateSpec::new("later", "1.0.0"),
    ])
    .await;
    let git_url = mirror.git_url();
    let dir = tempfile::tempdir().unwrap();
    let clone_dir = dir.path().to_path_buf();
    let clone = tokio::task::spawn_blocking(move || {
        git_ok(&clone_dir, &["clone", "--quiet", &git_url, "index"]);
        git_ok(&clone_dir.join("index"), &["ls-files"])
    })
    .await
    .unwrap();
    assert_eq!(
        clone.lines().collect::<Vec<_>>(),
        ["config.json", "se/rd/serde"]
    );

    // A fetch sends haves as well as wants.
    let later = mirror.get("/index/la/te/later").await;
    assert_eq!(later.status(), 200);
    mirror.wait_for_git_files(3).await;
    let index = dir.path().join("index");
    let files = tokio::task::spawn_blocking(move || {
        git_ok(&index, &["pull", "--quiet", "--ff-only"]);
        git_ok(&index, &["ls-files"])
    })
    .await
    .unwrap();
    assert!(files.contains("la/te/later"), "{files}");

    // A gzip request body (git sends one when its haves are many), by hand.
    let tip = files_tip(dir.path().join("index")).await;
    let mut request = Vec::new();
    let want = format!("want {tip}\n");
    request.extend_from_slice(format!("{:04x}{want}", want.len() + 4).as_bytes());
    request.extend_from_slice(b"00000009done\n");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&request).unwrap();
    let pack = client()
        .post(format!("{}/git-upload-pack", mirror.git_url()))
        .header("content-type", "application/x-git-upload-pack-request")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(pack.status(), 200);
    let body = pack.bytes().await.unwrap();
    assert!(
        body.windows(4).any(|w| w == b"PACK"),
        "no pack in the answer"
    );
}

/// The commit a clone's branch points at.
async fn files_tip(clone: std::path::PathBuf) -> String {
    tokio::task::spawn_blocking(move || git_ok(&clone, &["rev-parse", "HEAD"]).trim().to_string())
        .await
        .unwrap()
}
