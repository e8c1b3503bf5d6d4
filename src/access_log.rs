//! The access log: one line per request, written when its response ends (its
//! last body byte handed to the connection, or the body dropped early), in
//! the same shapes as the other log lines (tracing's text and JSON formats,
//! target `crate_mirror::access`), but formatted here directly into one buffer.
//!
//! A line written when the handler returns would say neither how many bytes
//! went out nor whether the client stayed to the end: `Logged` wraps the
//! response body, counts what its `poll_next` hands out and writes the line
//! from its `Drop`, complete or cut short (the client went away, or the stop
//! past `shutdown-timeout` dropped the connection).
//!
//! Through tracing's generic field visitors the line cost about 7% of the CPU
//! of a hot index hit (see `benches/results/versus_nginx.md`); this is the
//! fixed set of fields, written with no intermediate strings. The line goes to
//! the same non-blocking writer as every other log line, and `RUST_LOG` still
//! decides whether it is written.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::ServiceRequest;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, Uri, Version};
use bytes::Bytes;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::config::LogFormat;

/// The log target of access lines (for `RUST_LOG` filters).
pub const TARGET: &str = "crate_mirror::access";

/// Longest method, path and user agent written. The lines wait in a queue
/// of thousands (see `main`) while the log is slow, so their length is not
/// the client's to choose: a real method is a few letters, a real path under
/// 200 bytes and a real user agent under 100; the start of anything longer
/// says what it was.
const LOGGED_METHOD_BYTES: usize = 32;
const LOGGED_PATH_BYTES: usize = 512;
const LOGGED_USER_AGENT_BYTES: usize = 256;

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its last byte was handed to the connection.
    Complete,
    /// The client went away (or reset its stream) before the end.
    Aborted,
    /// Cut by the stop: the connection was still open when
    /// `shutdown-timeout` ran out.
    Shutdown,
    /// The body itself failed (a stream from the upstream or the store broke).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::Shutdown => "shutdown",
            Outcome::Error => "error",
        }
    }
}

/// One request, as logged.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub version: &'a str,
    pub status: u16,
    /// Until the response head was ready.
    pub latency: Duration,
    /// Until the last body byte (or the end, cut short).
    pub duration: Duration,
    /// Body bytes handed to the connection (none for HEAD).
    pub bytes: u64,
    pub outcome: Outcome,
    /// The `x-cache` value, or `-`.
    pub cache: &'a str,
    /// The connection's peer.
    pub client: Option<IpAddr>,
    /// The client's address as a trusted proxy reported it.
    pub forwarded_for: Option<IpAddr>,
    /// The `User-Agent` (its start), or `-`.
    pub user_agent: &'a str,
}

type SharedWriter = Box<dyn Fn(&[u8]) + Send + Sync>;

struct Sink {
    format: LogFormat,
    write: SharedWriter,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Lines owed: responses whose line is not written yet.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// Set when the stop drops the connections still open: a body dropped
/// unfinished from then on was cut by the stop, not by its client.
static CUT_BY_STOP: AtomicBool = AtomicBool::new(false);

/// Sends access lines to `write` (the process's log writer) in `format`. Until
/// this is called (in embedders and benches) they go through `tracing`.
pub fn install(format: LogFormat, write: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = SINK.set(Sink {
        format,
        write: Box::new(write),
    });
}

/// Whether `RUST_LOG` lets access lines through.
fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// From now on, a response that ends unfinished was cut by the stop
/// (`shutdown-timeout` ran out with its connection still open).
pub fn stop_cuts_from_now() {
    CUT_BY_STOP.store(true, Ordering::SeqCst);
}

/// How many responses' lines are still owed (their bodies not dropped yet):
/// the stop waits for none before its last line.
pub fn lines_owed() -> usize {
    PENDING.load(Ordering::Acquire)
}

/// Logs one request, when `RUST_LOG` lets `crate_mirror::access` info through.
pub fn log(record: &AccessRecord<'_>) {
    if !enabled() {
        return;
    }
    let Some(sink) = SINK.get() else {
        tracing::info!(
            target: TARGET,
            method = record.method,
            path = record.path,
            version = record.version,
            status = record.status,
            latency_ms = latency_ms(record.latency),
            duration_ms = latency_ms(record.duration),
            bytes = record.bytes,
            outcome = record.outcome.as_str(),
            cache = record.cache,
            client = %Address(record.client),
            forwarded_for = %Address(record.forwarded_for),
            user_agent = record.user_agent,
        );
        return;
    };
    thread_local! {
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        format_line(&mut line, sink.format, record);
        (sink.write)(line.as_bytes());
    });
}

/// An address as logged: the IP, or `-`.
struct Address(Option<IpAddr>);

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("-"),
        }
    }
}

/// Milliseconds to two decimals (10 µs): `2.53`, not `2.5320080000000003`,
/// which is noise to a reader and bytes in every line.
fn latency_ms(latency: Duration) -> f64 {
    (latency.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Writes the line, newline included. Writing to a `String` cannot fail.
fn format_line(line: &mut String, format: LogFormat, r: &AccessRecord<'_>) {
    // tracing's own clock format, so access lines sort with the others.
    let mut timestamp = String::with_capacity(32);
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp));
    let latency = latency_ms(r.latency);
    let duration = latency_ms(r.duration);
    let (client, forwarded) = (Address(r.client), Address(r.forwarded_for));
    match format {
        LogFormat::Text => {
            let _ = write!(
                line,
                "{timestamp}  INFO {TARGET}: method={} path={} version={} status={} \
                 latency_ms={latency} duration_ms={duration} bytes={} outcome={} cache={} \
                 client={client} forwarded_for={forwarded} user_agent=",
                r.method,
                r.path,
                r.version,
                r.status,
                r.bytes,
                r.outcome.as_str(),
                r.cache
            );
            // Quoted like tracing's own string fields: it has spaces.
            json_string(line, r.user_agent);
            line.push('\n');
        }
        LogFormat::Json => {
            let _ = write!(
                line,
                "{{\"timestamp\":\"{timestamp}\",\"level\":\"INFO\",\"fields\":{{\"method\":"
            );
            json_string(line, r.method);
            line.push_str(",\"path\":");
            json_string(line, r.path);
            line.push_str(",\"version\":");
            json_string(line, r.version);
            let _ = write!(
                line,
                ",\"status\":{},\"latency_ms\":{latency},\"duration_ms\":{duration},\
                 \"bytes\":{},\"outcome\":\"{}\",\"cache\":",
                r.status,
                r.bytes,
                r.outcome.as_str()
            );
            json_string(line, r.cache);
            let _ = write!(
                line,
                ",\"client\":\"{client}\",\"forwarded_for\":\"{forwarded}\",\"user_agent\":"
            );
            json_string(line, r.user_agent);
            let _ = writeln!(line, "}},\"target\":\"{TARGET}\"}}");
        }
    }
}

/// `value` as a JSON string (quoted and escaped).
fn json_string(line: &mut String, value: &str) {
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(line, "\\u{:04x}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// `text` cut to at most `max` bytes (on a character boundary) with a
/// trailing `…` when it was longer; borrowed when it was not.
pub fn start_of(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// What the line says about the request, taken as it comes in. Clones
/// only share buffers (the URI's and header values'), except an unusual
/// method's name.
pub struct RequestFacts {
    started: Instant,
    method: Method,
    uri: Uri,
    version: Version,
    client: Option<IpAddr>,
    forwarded_for: Option<IpAddr>,
    user_agent: Option<HeaderValue>,
}

impl RequestFacts {
    /// The facts of `req`, which came in at `started`, `forwarded_for` telling what a trusted proxy
    /// said the client's address was (see `http::origin::forwarded_client`);
    /// `None` when the log is off.
    pub fn of(
        req: &ServiceRequest,
        started: Instant,
        forwarded_for: impl FnOnce() -> Option<IpAddr>,
    ) -> Option<Self> {
        enabled().then(|| RequestFacts {
            started,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            client: req.peer_addr().map(|peer| peer.ip()),
            forwarded_for: forwarded_for(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
        })
    }
}

/// A response body that writes its request's access line when dropped.
pub struct Logged<B> {
    body: B,
    line: Option<OwedLine>,
}

/// Everything the line needs, and what the body did so far.
struct OwedLine {
    request: RequestFacts,
    status: u16,
    latency: Duration,
    cache: Option<HeaderValue>,
    /// HEAD: the body is never sent, whatever the dispatcher does with it.
    counting: bool,
    bytes: u64,
    ended: bool,
    failed: bool,
}

impl<B: MessageBody> Logged<B> {
    /// `body`, to be logged with `request` (`None`: not logged), `status`,
    /// `cache` (the response's `x-cache`) and `latency` (to the head) when
    /// it ends.
    pub fn new(
        body: B,
        request: Option<RequestFacts>,
        status: u16,
        cache: Option<&HeaderValue>,
        latency: Duration,
    ) -> Self {
        let line = request.map(|request| {
            PENDING.fetch_add(1, Ordering::Relaxed);
            let head = request.method == Method::HEAD;
            // Nothing to send: the dispatchers drop such a body unpolled.
            let empty = matches!(body.size(), BodySize::None | BodySize::Sized(0));
            OwedLine {
                latency,
                request,
                status,
                cache: cache.cloned(),
                counting: !head,
                bytes: 0,
                ended: head || empty,
                failed: false,
            }
        });
        Logged { body, line }
    }
}

impl<B: MessageBody + Unpin> MessageBody for Logged<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_next(cx);
        if let Some(line) = &mut this.line {
            match &polled {
                Poll::Ready(Some(Ok(chunk))) if line.counting => line.bytes += chunk.len() as u64,
                Poll::Ready(Some(Err(_))) => line.failed = true,
                Poll::Ready(None) => line.ended = true,
                _ => {}
            }
        }
        polled
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        let Some(owed) = self.line.take() else {
            return;
        };
        let outcome = if owed.failed {
            Outcome::Error
        } else if owed.ended {
            Outcome::Complete
        } else if CUT_BY_STOP.load(Ordering::SeqCst) {
            Outcome::Shutdown
        } else {
            Outcome::Aborted
        };
        let request = &owed.request;
        let user_agent = owed
            .request
            .user_agent
            .as_ref()
            .map(|value| String::from_utf8_lossy(value.as_bytes()));
        log(&AccessRecord {
            method: &start_of(request.method.as_str(), LOGGED_METHOD_BYTES),
            path: &start_of(request.uri.path(), LOGGED_PATH_BYTES),
            version: version_str(request.version),
            status: owed.status,
            latency: owed.latency,
            duration: request.started.elapsed(),
            bytes: owed.bytes,
            outcome,
            cache: owed
                .cache
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            client: request.client,
            forwarded_for: request.forwarded_for,
            user_agent: &start_of(
                user_agent.as_deref().unwrap_or("-"),
                LOGGED_USER_AGENT_BYTES,
            ),
        });
        PENDING.fetch_sub(1, Ordering::Release);
    }
}

/// Adapts any `std::io::Write` that is cheap to clone (the non-blocking log
/// writer) into the sink `install` takes.
pub fn writer_sink<W: std::io::Write + Clone + Send + Sync + 'static>(
    writer: W,
) -> impl Fn(&[u8]) + Send + Sync + 'static {
    move |bytes| {
        let _ = writer.clone().write_all(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            method: "GET",
            path: "/index/se/rd/\"odd\\path",
            version: "HTTP/1.1",
            status: 200,
            latency: Duration::from_micros(1250),
            duration: Duration::from_micros(4500),
            bytes: 1234,
            outcome: Outcome::Aborted,
            cache: "HIT",
            client: Some("192.0.2.7".parse().unwrap()),
            forwarded_for: None,
            user_agent: "cargo/1.80.0 (\"x\")",
        }
    }

    #[test]
    fn json_lines_parse_with_every_field() {
        let mut line = String::new();
        format_line(&mut line, LogFormat::Json, &record());
        assert!(line.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], TARGET);
        let fields = &value["fields"];
        assert_eq!(fields["method"], "GET");
        assert_eq!(fields["path"], "/index/se/rd/\"odd\\path");
        assert_eq!(fields["version"], "HTTP/1.1");
        assert_eq!(fields["status"], 200);
        assert_eq!(fields["latency_ms"], 1.25);
        assert_eq!(fields["duration_ms"], 4.5);
        assert_eq!(fields["bytes"], 1234);
        assert_eq!(fields["outcome"], "aborted");
        assert_eq!(fields["cache"], "HIT");
        assert_eq!(fields["client"], "192.0.2.7");
        assert_eq!(fields["forwarded_for"], "-");
        assert_eq!(fields["user_agent"], "cargo/1.80.0 (\"x\")");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_lines_name_every_field() {
        let mut line = String::new();
        format_line(&mut line, LogFormat::Text, &record());
        assert!(line.contains(" INFO crate_mirror::access: method=GET path=/index/se/rd/"));
        assert!(
            line.ends_with(
                "version=HTTP/1.1 status=200 latency_ms=1.25 duration_ms=4.5 bytes=1234 \
                 outcome=aborted cache=HIT client=192.0.2.7 forwarded_for=- \
                 user_agent=\"cargo/1.80.0 (\\\"x\\\")\"\n"
            ),
            "{line}"
        );
    }

    #[test]
    fn latency_is_rounded_to_hundredths_of_a_millisecond() {
        let mut odd = record();
        odd.latency = Duration::from_nanos(2_532_008);
        let mut text = String::new();
        format_line(&mut text, LogFormat::Text, &odd);
        assert!(text.contains(" latency_ms=2.53 "), "{text}");
        let mut json = String::new();
        format_line(&mut json, LogFormat::Json, &odd);
        assert!(json.contains("\"latency_ms\":2.53,"), "{json}");
        odd.latency = Duration::from_nanos(999);
        assert_eq!(latency_ms(odd.latency), 0.0);
    }

    #[test]
    fn control_characters_are_escaped_in_json() {
        let mut line = String::new();
        json_string(&mut line, "a\u{1}b\u{7f}");
        assert_eq!(line, "\"a\\u0001b\\u007f\"");
    }

    #[test]
    fn logged_strings_keep_their_start() {
        assert_eq!(start_of("GET", 32), "GET");
        let long = "M".repeat(100);
        assert_eq!(start_of(&long, 32), format!("{}…", &long[..32]));
        // Never inside a character.
        assert_eq!(start_of("/ééé", 4), "/é…");
    }
}
