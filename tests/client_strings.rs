//! Strings a client chooses (methods, crate names, paths, headers) never
//! become metric label values nor entries of the dashboard's top list: every
//! label comes from a fixed set, and only crates that exist are counted. Sent
//! over HTTP/1.1 (raw sockets, pipelined: what a hostile client does) and over
//! h2 with prior knowledge (real curl).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::mirror::Mirror;
use support::registry::graph_registry;
use support::upstream::{DlStyle, TestUpstream};
use support::{client, json_of};

/// The `method` label's values: the methods of RFC 9110 and PATCH, and
/// `other` for any other token a client sends.
const METHOD_LABELS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
];

/// Writes `requests` on one connection, all at once (pipelined; the last one
/// closes it), reading the answers meanwhile: the status of each answer.
fn pipelined(base: &str, requests: &[String]) -> Vec<u16> {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut all = String::new();
    for (n, request) in requests.iter().enumerate() {
        all.push_str(request);
        if n + 1 == requests.len() {
            all.push_str("Connection: close\r\n");
        }
        all.push_str("\r\n");
    }
    // The server answers while the requests are still being written: read
    // meanwhile, or both sides' buffers fill.
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(all.as_bytes());
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    sender.join().unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split("HTTP/1.1 ")
        .skip(1)
        .filter_map(|answer| answer.get(..3)?.parse().ok())
        .collect()
}

/// A request head without its final empty line (`pipelined` adds it).
fn head(method: &str, target: &str, extra: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n{extra}")
}

/// One request over h2 with prior knowledge (real curl): its status.
fn curl_h2(method: &str, url: &str, headers: &[&str]) -> u16 {
    let mut args = vec![
        "--silent",
        "--http2-prior-knowledge",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        "--max-time",
        "30",
        "-X",
        method,
        url,
    ];
    for header in headers {
        args.extend(["-H", header]);
    }
    let output = Command::new("curl").args(&args).output().expect("curl");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

async fn metrics_text(mirror: &Mirror) -> String {
    mirror.get("/metrics").await.text().await.unwrap()
}

/// Every label of every sample: `(family, label, value)`.
fn labels_of(text: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let mut chars = rest.chars();
        loop {
            let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if label.is_empty() || label.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().unwrap_or('\\')),
                    '"' => break,
                    c => value.push(c),
                }
            }
            found.push((
                name.to_string(),
                label.trim_start_matches(',').to_string(),
                value,
            ));
            if chars.clone().next() == Some(',') {
                chars.next();
            }
        }
    }
    found
}

/// The series of an exposition (histograms by their `_count`, not each bucket).
fn series(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.contains("_bucket{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .filter(|s| !s.ends_with("_sum") && !s.contains("_sum{"))
        .collect()
}

/// Made-up methods (one 8 KB long), crate names, paths and headers over
/// HTTP/1.1 and h2; then every label of every family on `/metrics` is from a
/// fixed set and none holds any of those strings, and the number of series
/// grew by no more than the fixed sets allow. An h2 request whose `:method`
/// alone is 20 KB is refused (its pseudo-headers count toward the header
/// limit) and counted under `other`.
#[tokio::test]
async fn client_strings_never_become_metric_labels() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    // Real traffic first, so the fixed series it makes exist before counting.
    assert_eq!(mirror.get("/index/3/a/abc").await.status(), 200);
    let before = metrics_text(&mirror).await;

    let long_method = format!("ZQLONG{}", "M".repeat(8 * 1024));
    let mut sent: Vec<String> = vec![long_method.clone()];
    let mut requests = Vec::new();
    for n in 0..200 {
        let method = format!("ZQMETHOD{n}");
        let target = ["/index/3/a/abc", "/api/stats", "/zqpath", "/metrics"][n % 4];
        requests.push(head(&method, target, ""));
        sent.push(method);
    }
    requests.push(head(&long_method, "/index/3/a/abc", ""));
    for n in 0..50 {
        let name = format!("zqnosuchcrate{n}");
        requests.push(head("GET", &format!("/index/zq/no/{name}"), ""));
        requests.push(head(
            "GET",
            &format!("/api/v1/crates/{name}/1.0.0/download"),
            "",
        ));
        sent.push(name);
    }
    for path in ["/zqodd/%ff%00", "/index/zqodd//x", "/api/v1/crates/zqodd"] {
        requests.push(head("GET", path, ""));
    }
    sent.push("zqodd".into());
    requests.push(head(
        "GET",
        "/index/3/a/abc",
        "User-Agent: zqagent\r\nX-Forwarded-Host: zqforwarded.example\r\nForwarded: host=zqforwarded.example\r\n",
    ));
    requests.push("GET /index/config.json HTTP/1.1\r\nHost: zqhost.example\r\n".to_string());
    sent.extend(["zqagent", "zqforwarded", "zqhost"].map(String::from));
    let statuses = pipelined(&mirror.url, &requests);
    assert_eq!(statuses.len(), requests.len(), "every request answered");

    // The same over h2.
    let base = &mirror.url;
    for n in 0..20 {
        let method = format!("ZQH2METHOD{n}");
        let status = curl_h2(&method, &format!("{base}/index/3/a/abc"), &[]);
        assert!((400..500).contains(&status), "{method}: {status}");
        sent.push(method);
    }
    let status = curl_h2(
        "GET",
        &format!("{base}/index/zq/h2/zqh2crate"),
        &[
            "user-agent: zqh2agent",
            "x-forwarded-host: zqh2host.example",
        ],
    );
    assert_eq!(status, 404);
    sent.extend(["zqh2crate", "zqh2agent", "zqh2host"].map(String::from));
    let huge = format!("ZQHUGE{}", "M".repeat(20 * 1024));
    let huge_status = curl_h2(&huge, &format!("{base}/index/3/a/abc"), &[]);
    sent.push("ZQHUGE".into());

    let after = metrics_text(&mirror).await;
    for (family, label, value) in labels_of(&after) {
        for string in &sent {
            let probe = &string[..string.len().min(64)];
            assert!(
                !value.to_lowercase().contains(&probe.to_lowercase()),
                "{family}: label {label} holds a client's string ({} bytes: {}…)",
                value.len(),
                &value[..value.len().min(40)]
            );
        }
        if label == "method" {
            assert!(
                METHOD_LABELS.contains(&value.as_str()),
                "{family}: method label {value:?} is not in the fixed set"
            );
        }
    }
    // The statuses answered and the fixed methods bound the new series: far
    // fewer than the 220 distinct methods sent.
    let (before, after_series) = (series(&before), series(&after));
    let new: Vec<&&str> = after_series.difference(&before).collect();
    eprintln!("{} new series", new.len());
    assert!(
        new.len() < 40,
        "{} new series after the made-up requests: {new:#?}",
        new.len()
    );
    assert!(
        huge_status == 431 || huge_status == 400,
        "a 20 KB :method over h2: {huge_status}"
    );
    let samples = support::parse_samples(&after);
    let refused = samples
        .iter()
        .filter(|(series, _)| {
            series.starts_with("crate_mirror_http_requests_total{")
                && series.contains("method=\"other\"")
                && (series.contains("status=\"431\"") || series.contains("status=\"400\""))
        })
        .map(|(_, value)| *value)
        .sum::<f64>();
    assert!(refused >= 1.0, "the huge :method is counted under other");
    let other = samples
        .iter()
        .filter(|(s, _)| {
            s.starts_with("crate_mirror_http_requests_total{") && s.contains("method=\"other\"")
        })
        .map(|(_, v)| *v)
        .sum::<f64>();
    assert!(
        other >= 221.0,
        "made-up methods counted under other: {other}"
    );
}

/// A flood of 5,000 requests with 8 KB made-up methods, pipelined on raw
/// sockets against a mirror with no token: `/metrics` stays small (it grew
/// to 40 MB when each method was a label value). Prints the mirror's RSS
/// before and after, and the exposition's size, for the record.
#[tokio::test]
async fn a_flood_of_made_up_methods_leaves_metrics_small() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let before_size = metrics_text(&mirror).await.len();
    let rss_before = mirror.status_kib("VmRSS");
    let filler = "M".repeat(8 * 1024);
    let senders: Vec<_> = (0..4)
        .map(|part| {
            let base = mirror.url.clone();
            let filler = filler.clone();
            std::thread::spawn(move || {
                let requests: Vec<String> = (0..1250)
                    .map(|n| head(&format!("ZQ{part}X{n}{filler}"), "/index/3/a/abc", ""))
                    .collect();
                pipelined(&base, &requests).len()
            })
        })
        .collect();
    let answered: usize = senders.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(answered, 5000);
    let rss_flood = mirror.status_kib("VmRSS");
    let text = metrics_text(&mirror).await;
    let rss_scrape = mirror.status_kib("VmRSS");
    eprintln!(
        "RSS {rss_before} KiB before, {rss_flood} KiB after the flood, {rss_scrape} KiB after a scrape; \
         /metrics {before_size} bytes before, {} bytes after",
        text.len()
    );
    assert!(
        text.len() < 256 * 1024,
        "/metrics is {} bytes after the flood",
        text.len()
    );
    let methods: BTreeSet<String> = labels_of(&text)
        .into_iter()
        .filter(|(_, label, _)| label == "method")
        .map(|(_, _, value)| value)
        .collect();
    assert!(
        methods.iter().all(|m| METHOD_LABELS.contains(&m.as_str())),
        "{methods:?}"
    );
}

/// The top list counts crates that exist: made-up names requested (each
/// more often than the real ones) never appear in it, and the real ones stay.
#[tokio::test]
async fn made_up_crate_names_never_reach_the_top_list() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--prefetch", "off"])
        .start();
    for path in [
        "/index/3/a/abc",
        "/index/1/a",
        "/api/v1/crates/abc/1.0.0/download",
        "/index/2/ab",
    ] {
        assert_eq!(mirror.get(path).await.status(), 200, "{path}");
    }
    let http = client();
    let mut made_up = BTreeMap::new();
    for n in 0..300 {
        let name = format!("zqfake{n}");
        let index = format!("/index/zq/fa/{name}");
        let download = format!("/api/v1/crates/{name}/1.0.0/download");
        // A real crate's name with a made-up version is no request for it either.
        let version = "/api/v1/crates/abc/9.9.9/download".to_string();
        for path in [&index, &index, &index, &download, &version] {
            let status = http
                .get(format!("{}{path}", mirror.url))
                .send()
                .await
                .unwrap()
                .status();
            assert!(status.is_client_error(), "{path}: {status}");
        }
        made_up.insert(name, ());
    }
    let stats = json_of(http.get(format!("{}/api/stats", mirror.url))).await;
    let top: BTreeMap<String, u64> = stats["top_crates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    for name in top.keys() {
        assert!(
            !made_up.contains_key(name),
            "{name} in the top list: {top:?}"
        );
    }
    assert_eq!(top.get("abc"), Some(&2), "{top:?}");
    assert_eq!(top.get("a"), Some(&1), "{top:?}");
    assert_eq!(top.get("ab"), Some(&1), "{top:?}");
    assert_eq!(top.len(), 3, "{top:?}");
}

/// The access log keeps the start of a client's method and path, not all
/// of it: its lines wait in a queue of thousands in memory while the log
/// is slow, so a line's length must not be the client's to choose.
#[tokio::test]
async fn access_log_lines_keep_only_the_start_of_client_strings() {
    let upstream = TestUpstream::start(&graph_registry()[..3], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let method = format!("ZQLOGMETHOD{}", "M".repeat(8 * 1024));
    let path = format!("/index/zqlogpath{}", "p".repeat(6 * 1024));
    let statuses = pipelined(
        &mirror.url,
        &[
            head(&method, "/index/1/a", ""),
            head("GET", &path, ""),
            head("GET", "/index/1/a", ""),
        ],
    );
    assert_eq!(statuses, [405, 414, 200]);
    support::wait_until(Duration::from_secs(10), "the access lines", || async {
        mirror.log().matches("crate_mirror::access").count() >= 3
    })
    .await;
    let log = mirror.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ZQLOGMETHOD") || l.contains("zqlogpath"))
        .collect();
    assert_eq!(lines.len(), 2, "{log:.2000}");
    for line in lines {
        assert!(line.len() < 1024, "an access line of {} bytes", line.len());
    }
}
