//! The access log: one line per request, written when the response ends,
//! with the body bytes sent, the duration to the last byte and how it ended
//! (`outcome`: complete, aborted by the client, cut by the stop), the
//! client's address (and the one a trusted proxy forwarded, only from a
//! trusted proxy), and the start of the user agent; over HTTP/1.1 and h2, in
//! the text and JSON formats. A stop past `shutdown-timeout` logs the cut
//! download, how many connections it dropped and a last `stopped` line. The
//! log's first line is the start line, naming the data dir absolute.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::mirror::Mirror;
use support::registry::{publish, CrateSpec, Published};
use support::upstream::{DlStyle, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The download every test makes.
const DOWNLOAD: &str = "/api/v1/crates/big/1.0.0/download";
/// Its size: far more than the socket buffers between the mirror and a
/// client that stops reading hold, so its sending stalls until the client
/// reads on.
const BIG: usize = 16 << 20;
/// How much of it a client reads before it pauses (or goes away).
const PART: usize = 64 << 10;
/// How long a test waits for a line the mirror must write.
const LINE_WAIT: Duration = Duration::from_secs(30);

/// The big crate, made once for all the tests of this file.
fn big() -> &'static Published {
    static BIG_CRATE: OnceLock<Published> = OnceLock::new();
    BIG_CRATE.get_or_init(|| publish(&CrateSpec::new("big", "1.0.0").padding(BIG)))
}

/// An upstream with the big crate and a mirror of it started with `args`.
fn mirror_of_big(args: &[&str]) -> (TestUpstream, Mirror) {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    upstream.add(big());
    let mirror = Mirror::builder(&upstream.url).args(args).start();
    (upstream, mirror)
}

/// The `fields` of the JSON access lines whose path is `path`, in order.
fn json_lines(mirror: &Mirror, path: &str) -> Vec<Value> {
    mirror
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "crate_mirror::access" && line["fields"]["path"] == path)
        .map(|line| line["fields"].clone())
        .collect()
}

/// Waits until `path` has `count` JSON access lines, and returns them.
async fn wait_json_lines(mirror: &Mirror, path: &str, count: usize) -> Vec<Value> {
    let what = format!("{count} access lines of {path}");
    support::wait_until(LINE_WAIT, &what, || async {
        json_lines(mirror, path).len() >= count
    })
    .await;
    json_lines(mirror, path)
}

/// The value of `key=` in a text access line (up to the next space).
fn text_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// Downloads the big crate whole (the mirror then holds it: later
/// downloads are hits); the body's length.
async fn warm(mirror: &Mirror) -> usize {
    // A client of its own (`Mirror::get`'s), dropped here: no idle
    // connection stays open.
    let body = mirror
        .get(DOWNLOAD)
        .await
        .bytes()
        .await
        .expect("the crate's body");
    assert_eq!(body.len(), big().tarball.len());
    body.len()
}

/// A download over a raw HTTP/1.1 connection, read as the test chooses.
struct RawDownload {
    tcp: TcpStream,
    /// The body's length (`Content-Length`).
    len: usize,
    /// Body bytes read so far.
    read: usize,
}

impl RawDownload {
    /// Sends the request (with `headers`, each line ending in CRLF) and
    /// reads the response head and at least `PART` bytes of the body.
    async fn start(mirror: &Mirror, headers: &str) -> Self {
        let addr = mirror.url.trim_start_matches("http://");
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {DOWNLOAD} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        tcp.write_all(request.as_bytes()).await.expect("send");
        let mut received = Vec::new();
        let head_end = loop {
            let mut buf = [0u8; 16 * 1024];
            let n = tcp.read(&mut buf).await.expect("read the head");
            assert!(n > 0, "closed before the head");
            received.extend_from_slice(&buf[..n]);
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Content-Length: {head}"));
        let mut download = RawDownload {
            tcp,
            len,
            read: received.len() - head_end,
        };
        download.read_until(PART).await;
        download
    }

    /// Reads on until `total` body bytes are read.
    async fn read_until(&mut self, total: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read < total {
            let want = buf.len().min(total - self.read);
            let n = self.tcp.read(&mut buf[..want]).await.expect("read body");
            assert!(n > 0, "closed after {} of {} bytes", self.read, self.len);
            self.read += n;
        }
    }
}

/// A whole download over HTTP/1.1, text log: its line counts every body
/// byte, says it completed, and gives the duration to the last byte
/// (no shorter than the time to the head), the client and the user agent.
#[tokio::test]
async fn a_full_download_logs_its_bytes_and_that_it_completed() {
    let (_upstream, mirror) = mirror_of_big(&[]);
    let len = warm(&mirror).await;
    let path = format!("path={DOWNLOAD} ");
    support::wait_until(LINE_WAIT, "the download's access line", || async {
        mirror.log().lines().any(|l| l.contains(&path))
    })
    .await;
    let log = mirror.log();
    let line = log.lines().find(|l| l.contains(&path)).expect("the line");
    assert!(line.contains(" INFO crate_mirror::access: "), "{line}");
    assert_eq!(
        text_field(line, "bytes"),
        Some(len.to_string().as_str()),
        "{line}"
    );
    assert_eq!(text_field(line, "outcome"), Some("complete"), "{line}");
    assert_eq!(text_field(line, "status"), Some("200"), "{line}");
    assert_eq!(text_field(line, "client"), Some("127.0.0.1"), "{line}");
    assert_eq!(text_field(line, "forwarded_for"), Some("-"), "{line}");
    let ms = |key| -> f64 {
        text_field(line, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {line}"))
    };
    assert!(ms("duration_ms") >= ms("latency_ms"), "{line}");
    // reqwest sends no user agent of its own.
    assert!(line.ends_with(" user_agent=\"-\""), "{line}");
}

/// The line is written once the last byte has gone, not when the answer
/// starts: while the client pauses mid-body the line is not there, though
/// a later request's line is; once the client has read everything, it is.
#[tokio::test]
async fn the_line_is_written_after_the_last_byte() {
    let (_upstream, mirror) = mirror_of_big(&["--log-format", "json"]);
    warm(&mirror).await;
    wait_json_lines(&mirror, DOWNLOAD, 1).await;
    let mut download = RawDownload::start(&mirror, "").await;
    // The paused client holds the rest; a request made after it is logged
    // (lines are written in order), the paused download is not.
    let health = support::client()
        .get(format!("{}/health", mirror.url))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(health.status(), 200);
    wait_json_lines(&mirror, "/health", 1).await;
    assert_eq!(
        json_lines(&mirror, DOWNLOAD).len(),
        1,
        "the paused download was logged after {} of {} bytes:\n{}",
        download.read,
        download.len,
        mirror.log_tail(5)
    );
    let len = download.len;
    download.read_until(len).await;
    let lines = wait_json_lines(&mirror, DOWNLOAD, 2).await;
    assert_eq!(lines[1]["bytes"], len, "{}", lines[1]);
    assert_eq!(lines[1]["outcome"], "complete", "{}", lines[1]);
    assert_eq!(lines[1]["cache"], "HIT", "{}", lines[1]);
}

/// A client that goes away mid-download is logged as such, with the bytes
/// sent until then (fewer than the body's).
#[tokio::test]
async fn a_client_gone_mid_download_is_logged_aborted() {
    let (_upstream, mirror) = mirror_of_big(&["--log-format", "json"]);
    warm(&mirror).await;
    wait_json_lines(&mirror, DOWNLOAD, 1).await;
    let download = RawDownload::start(&mirror, "").await;
    let len = download.len;
    drop(download);
    let lines = wait_json_lines(&mirror, DOWNLOAD, 2).await;
    let line = &lines[1];
    assert_eq!(line["outcome"], "aborted", "{line}");
    let bytes = line["bytes"].as_u64().expect("bytes");
    assert!(bytes < len as u64, "{bytes} of {len}: {line}");
    assert_eq!(line["status"], 200, "{line}");
}

/// The same over HTTP/2 (prior knowledge on the plain listener): a whole
/// download counts every byte; a stream the client resets mid-body is aborted.
#[tokio::test]
async fn h2_downloads_log_their_bytes_and_resets() {
    let (_upstream, mirror) = mirror_of_big(&["--log-format", "json"]);
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .gzip(false)
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let url = format!("{}{DOWNLOAD}", mirror.url);
    let whole = h2.get(&url).send().await.expect("GET over h2");
    assert_eq!(whole.version(), reqwest::Version::HTTP_2);
    let len = whole.bytes().await.expect("the body").len();
    assert_eq!(len, big().tarball.len());
    let lines = wait_json_lines(&mirror, DOWNLOAD, 1).await;
    assert_eq!(lines[0]["version"], "HTTP/2.0", "{}", lines[0]);
    assert_eq!(lines[0]["bytes"], len, "{}", lines[0]);
    assert_eq!(lines[0]["outcome"], "complete", "{}", lines[0]);

    let mut cut = h2.get(&url).send().await.expect("GET over h2");
    let first = cut.chunk().await.expect("a chunk").expect("not the end");
    assert!(!first.is_empty());
    // Dropping the body resets the stream; the connection stays.
    drop(cut);
    let lines = wait_json_lines(&mirror, DOWNLOAD, 2).await;
    assert_eq!(lines[1]["version"], "HTTP/2.0", "{}", lines[1]);
    assert_eq!(lines[1]["outcome"], "aborted", "{}", lines[1]);
    let bytes = lines[1]["bytes"].as_u64().expect("bytes");
    assert!(bytes < len as u64, "{bytes} of {len}: {}", lines[1]);
}

/// The user agent is logged, and only its start when it is long: the
/// line's length is not the client's to choose.
#[tokio::test]
async fn the_user_agent_is_logged_and_bounded() {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--log-format", "json"])
        .start();
    let long = format!("zqagent/{}", "u".repeat(8 * 1024));
    for agent in ["cargo/1.80.0 (abc 2024-07-21)", long.as_str()] {
        let response = support::client()
            .get(format!("{}/health", mirror.url))
            .header("user-agent", agent)
            .send()
            .await
            .expect("GET /health");
        assert_eq!(response.status(), 200);
    }
    let lines = wait_json_lines(&mirror, "/health", 2).await;
    assert_eq!(lines[0]["user_agent"], "cargo/1.80.0 (abc 2024-07-21)");
    let logged = lines[1]["user_agent"].as_str().expect("user_agent");
    assert!(logged.starts_with("zqagent/uuu"), "{logged:.80}");
    assert!(logged.ends_with('…'), "{logged:.80}");
    assert!(logged.len() <= 260, "{} bytes of user agent", logged.len());
}

/// The forwarded address is logged only from a trusted proxy, as the
/// nearest untrusted hop of the list; from anyone else the forwarding
/// headers are ignored and only the peer is logged.
#[tokio::test]
async fn a_forwarded_address_is_logged_only_from_a_trusted_proxy() {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let trusting = Mirror::builder(&upstream.url)
        .args(&["--log-format", "json", "--trusted-proxies", "127.0.0.1"])
        .start();
    let plain = Mirror::builder(&upstream.url)
        .args(&["--log-format", "json"])
        .start();
    let cases: [(&str, &str, &str); 3] = [
        ("x-forwarded-for", "203.0.113.66, 127.0.0.1", "203.0.113.66"),
        ("forwarded", "for=\"198.51.100.4:555\"", "198.51.100.4"),
        ("x-forwarded-for", "2001:db8::7", "2001:db8::7"),
    ];
    for mirror in [&trusting, &plain] {
        for (i, (name, value, _)) in cases.iter().enumerate() {
            let response = support::client()
                .get(format!("{}/health", mirror.url))
                .header(*name, *value)
                .header("user-agent", format!("case-{i}"))
                .send()
                .await
                .expect("GET /health");
            assert_eq!(response.status(), 200);
        }
    }
    for (mirror, trusted) in [(&trusting, true), (&plain, false)] {
        let lines = wait_json_lines(mirror, "/health", cases.len()).await;
        for (i, (_, _, client)) in cases.iter().enumerate() {
            let line = lines
                .iter()
                .find(|l| l["user_agent"] == format!("case-{i}"))
                .expect("the case's line");
            assert_eq!(line["client"], "127.0.0.1", "{line}");
            let expected = if trusted { *client } else { "-" };
            assert_eq!(line["forwarded_for"], expected, "trusted {trusted}: {line}");
        }
    }
}

/// A stop past `shutdown-timeout` with a download in flight: the download
/// is logged as cut by the stop, the stop says it dropped one connection,
/// and the last line says the mirror stopped.
#[tokio::test]
async fn a_stop_logs_the_download_it_cut_the_connections_it_dropped_and_stopped() {
    let (_upstream, mut mirror) =
        mirror_of_big(&["--log-format", "json", "--shutdown-timeout", "1"]);
    warm(&mirror).await;
    wait_json_lines(&mirror, DOWNLOAD, 1).await;
    let download = RawDownload::start(&mirror, "").await;
    let len = download.len;
    mirror.terminate();
    let exited = mirror.wait_exit(Duration::from_secs(30));
    assert!(exited.is_some(), "no exit within 30 s of SIGTERM");
    drop(download);
    let lines = json_lines(&mirror, DOWNLOAD);
    assert_eq!(lines.len(), 2, "{}", mirror.log());
    assert_eq!(lines[1]["outcome"], "shutdown", "{}", lines[1]);
    assert!(lines[1]["bytes"].as_u64().expect("bytes") < len as u64);
    let log = mirror.log();
    let json: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let dropped = json
        .iter()
        .find(|l| l["fields"]["connections"].is_u64())
        .unwrap_or_else(|| panic!("no dropped-connections line:\n{log}"));
    assert_eq!(dropped["fields"]["connections"], 1, "{dropped}");
    assert_eq!(dropped["level"], "WARN", "{dropped}");
    let last = json.last().expect("a log");
    assert_eq!(last["fields"]["message"], "crate-mirror stopped", "{log}");
}

/// The log's first line is the start line, and it names the data dir
/// absolute though it was given relative.
#[test]
fn the_start_line_comes_first_with_the_data_dir_absolute() {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("mirror.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let child = std::process::Command::new(support::mirror::bin())
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "./data"])
        .args(["--upstream", &upstream.url])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("start the mirror");
    let mut child = KillOnDrop(child);
    support::mirror::listening_url(&mut child.0, Duration::from_secs(30))
        .expect("the listening line");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = std::time::Instant::now() + LINE_WAIT;
    while !read_log().contains("crate-mirror started") {
        assert!(std::time::Instant::now() < deadline, "{}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = read_log();
    let first = log.lines().next().unwrap_or_default();
    assert!(first.contains("crate-mirror started"), "first line: {log}");
    let data_dir: PathBuf = std::fs::canonicalize(dir.path().join("data")).expect("data dir");
    let expected = format!("data_dir=\"{}\"", data_dir.display());
    assert!(data_dir.is_absolute());
    assert!(first.contains(&expected), "{expected} not in {first}");
}

/// A child process killed (and reaped) when the test ends, passing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
