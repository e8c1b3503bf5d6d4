//! The access log: one line per request, in the same shapes as the other log
//! lines (tracing's text and JSON formats, target `crate_mirror::access`), but
//! formatted here directly into one buffer.
//!
//! Through tracing's generic field visitors the line cost about 7% of the CPU
//! of a hot index hit (see `benches/results/versus_nginx.md`); this is the
//! fixed set of fields, written with no intermediate strings. The line goes to
//! the same non-blocking writer as every other log line, and `RUST_LOG` still
//! decides whether it is written.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::config::LogFormat;

/// The log target of access lines (for `RUST_LOG` filters).
pub const TARGET: &str = "crate_mirror::access";

/// One request, as logged.
pub struct AccessRecord<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub version: &'a str,
    pub status: u16,
    pub latency: Duration,
    /// The `x-cache` value, or `-`.
    pub cache: &'a str,
}

type SharedWriter = Box<dyn Fn(&[u8]) + Send + Sync>;

struct Sink {
    format: LogFormat,
    write: SharedWriter,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines to `write` (the process's log writer) in `format`. Until
/// this is called (in embedders and benches) they go through `tracing`.
pub fn install(format: LogFormat, write: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = SINK.set(Sink {
        format,
        write: Box::new(write),
    });
}

/// Logs one request, when `RUST_LOG` lets `crate_mirror::access` info through.
pub fn log(record: &AccessRecord<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
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
            cache = record.cache,
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
    match format {
        LogFormat::Text => {
            let _ = writeln!(
                line,
                "{timestamp}  INFO {TARGET}: method={} path={} version={} status={} latency_ms={latency} cache={}",
                r.method, r.path, r.version, r.status, r.cache
            );
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
                ",\"status\":{},\"latency_ms\":{latency},\"cache\":",
                r.status
            );
            json_string(line, r.cache);
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
            c if (c as u32) < 0x20 => {
                let _ = write!(line, "\\u{:04x}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
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
            cache: "HIT",
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
        assert_eq!(fields["cache"], "HIT");
        assert!(value["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_lines_name_every_field() {
        let mut line = String::new();
        format_line(&mut line, LogFormat::Text, &record());
        assert!(line.contains(" INFO crate_mirror::access: method=GET path=/index/se/rd/"));
        assert!(line.ends_with("version=HTTP/1.1 status=200 latency_ms=1.25 cache=HIT\n"));
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
        json_string(&mut line, "a\u{1}b");
        assert_eq!(line, "\"a\\u0001b\"");
    }
}
