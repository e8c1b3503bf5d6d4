//! The health probes (readiness without the upstream; a restart during an
//! upstream outage serving what the previous run cached, downloads included,
//! from the config.json it kept) and the HTTP worker threads (the settings'
//! own tests are in settings.rs).

use std::time::Duration;

use support::faults::{Fault, FaultProxy};
use support::mirror::Mirror;
use support::registry::{publish, CrateSpec};
use support::upstream::{DlStyle, TestUpstream};

#[tokio::test]
async fn health_and_readiness() {
    let mut upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let health = mirror.get("/health").await;
    assert_eq!(health.status(), 200);
    let report = ready_report(&mirror).await;
    assert_eq!(report["ready"], true);
    assert_eq!(report["upstream_config_known"], true);
    assert_eq!(report["upstream_config_fetch_ok"], true);
    assert_eq!(report["upstream_circuit_open"], false);

    // A node that never reached the upstream is ready too: readiness is about
    // the node (data dir, database, storage), and an upstream outage is the
    // same for every replica, so holding this one back would help no client.
    // The report says what is missing.
    upstream.stop();
    let orphan = Mirror::builder(&upstream.url).start();
    assert_eq!(orphan.get("/health").await.status(), 200);
    let report = ready_report(&orphan).await;
    assert_eq!(report["ready"], true);
    assert_eq!(report["upstream_config_known"], false);
    assert_eq!(report["data_dir_writable"], true);
    assert_eq!(report["database_open"], true);
    // The failed fetch is reported once it has been tried.
    let report = report_becomes(&orphan, |r| r["upstream_config_fetch_ok"] == false).await;
    assert_eq!(report["upstream_config_fetch_ok"], false, "{report}");
    assert_eq!(report["ready"], true, "{report}");
}

/// `/ready`, which must answer 200; its JSON report.
async fn ready_report(mirror: &Mirror) -> serde_json::Value {
    let ready = mirror.get("/ready").await;
    assert_eq!(ready.status(), 200);
    ready.json().await.unwrap()
}

/// `/ready` until its JSON satisfies `want` (bounded); the last report.
async fn report_becomes(
    mirror: &Mirror,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let report: serde_json::Value = mirror.get("/ready").await.json().await.unwrap();
        if want(&report) || std::time::Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A mirror restarted while the upstream is down is ready and serves what it
/// cached: the index file and the crate.
#[tokio::test]
async fn restarted_during_an_upstream_outage_it_is_ready_and_serves_its_cache() {
    let mut upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    let data = tempfile::tempdir().unwrap();
    let index_path = "/index/1/a";
    let download_path = "/api/v1/crates/a/1.0.0/download";
    let mirror = Mirror::builder(&upstream.url).data_dir(data.path()).start();
    let index = mirror.get(index_path).await;
    assert_eq!(index.status(), 200);
    let index = index.bytes().await.unwrap();
    let download = mirror.get(download_path).await;
    assert_eq!(download.status(), 200);
    let download = download.bytes().await.unwrap();
    mirror.stop();
    upstream.stop();

    let restarted = Mirror::builder(&upstream.url).data_dir(data.path()).start();
    let report = ready_report(&restarted).await;
    assert_eq!(report["ready"], true, "{report}");
    // The config.json kept by the first run.
    assert_eq!(report["upstream_config_known"], true, "{report}");
    // The start-up refresh of it fails, and says so.
    let report = report_becomes(&restarted, |r| r["upstream_config_fetch_ok"] == false).await;
    assert_eq!(report["upstream_config_fetch_ok"], false, "{report}");
    assert_eq!(report["ready"], true, "{report}");

    let served = restarted.get(index_path).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap(), index);
    let served = restarted.get(download_path).await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap(), download);
}

/// The kept config.json gives the `dl` template at start: with the upstream's
/// config.json failing, a crate not downloaded before is still fetched.
#[tokio::test]
async fn a_kept_config_json_serves_downloads_while_the_upstreams_fails() {
    let published = publish(&CrateSpec::new("abc", "1.0.0"));
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    upstream.add(&published);
    let proxy = FaultProxy::start(&upstream.url);
    let data = tempfile::tempdir().unwrap();
    let start = || {
        Mirror::builder(&proxy.url)
            .data_dir(data.path())
            .args(&["--index-ttl", "600"])
            .start()
    };
    let mirror = start();
    // Learns config.json (kept in sled) and the index file; no download yet.
    assert_eq!(mirror.get("/index/3/a/abc").await.status(), 200);
    let report = report_becomes(&mirror, |r| r["upstream_config_known"] == true).await;
    assert_eq!(report["upstream_config_known"], true, "{report}");
    mirror.stop();

    proxy.set(
        Fault::Status {
            status: 503,
            retry_after: None,
            times: usize::MAX,
        },
        "config.json",
    );
    let restarted = start();
    let download = restarted.get("/api/v1/crates/abc/1.0.0/download").await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap(), published.tarball);
    assert!(proxy.faulted() > 0, "config.json was asked for and failed");
}

/// `workers` sets how many threads serve HTTP (actix names them `actix-rt|system…`).
#[tokio::test]
async fn workers_sets_the_number_of_http_threads() {
    let upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    for workers in [1, 3] {
        let mirror = Mirror::builder(&upstream.url)
            .args(&["--workers", &workers.to_string()])
            .start();
        assert!(
            mirror.stats().await["requests"].is_object(),
            "the mirror serves"
        );
        let threads = std::fs::read_dir(format!("/proc/{}/task", mirror.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("actix-rt|system"))
            .count();
        assert_eq!(
            threads, workers,
            "HTTP worker threads with --workers {workers}"
        );
    }
}

/// What `crate-mirror ARGS` printed on stderr and its exit code, run with
/// `RUST_BACKTRACE=1` (an operator's shell often has it) and the default log
/// filter. `command` is split on spaces (the paths in it have none).
fn run_mirror(command: &str) -> (String, Option<i32>) {
    let output = std::process::Command::new(support::mirror::bin())
        .args(command.split(' '))
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run crate-mirror");
    (
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code(),
    )
}

/// The error line of a failed start: the one line that begins with
/// `crate-mirror:`, and nothing that looks like Rust's debug output or a
/// backtrace anywhere on stderr.
fn one_error_line(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("crate-mirror:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for noise in ["Os {", "kind:", "backtrace", "panicked", "Caused by"] {
        assert!(!stderr.contains(noise), "`{noise}` on stderr: {stderr}");
    }
    errors[0].to_string()
}

#[tokio::test]
async fn start_failures_are_one_line_naming_the_cause() {
    let upstream = "http://127.0.0.1:9/index/";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = |listen: &str, data: &std::path::Path| {
        format!(
            "serve --upstream {upstream} --listen {listen} --data-dir {}",
            data.display()
        )
    };

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let (stderr, code) = run_mirror(&serve(&listen, &data));
    let line = one_error_line(&stderr);
    assert!(
        line.contains(&format!("cannot listen on {listen}")) && line.contains("in use"),
        "{line}"
    );
    assert_eq!(code, Some(1));

    // A data dir that cannot be made (its parent is a file: the tests run as
    // root, for whom permissions would not stop anything).
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let below_file = file.join("data");
    let (stderr, code) = run_mirror(&serve("127.0.0.1:0", &below_file));
    let line = one_error_line(&stderr);
    assert!(
        line.contains(&format!("data dir {}", below_file.display()))
            && line.contains("Not a directory"),
        "{line}"
    );
    assert_eq!(code, Some(1));

    // `gc` and a second `serve` beside a running mirror: said in words.
    let mirror = Mirror::builder(upstream).data_dir(&data).start();
    let gc = format!("gc --data-dir {} --max-storage 1MiB", data.display());
    for command in [gc, serve("127.0.0.1:0", &data)] {
        let (stderr, code) = run_mirror(&command);
        let line = one_error_line(&stderr);
        assert!(
            line.contains("in use by another process")
                && line.contains("a mirror is already running on this data dir"),
            "{command}: {line}"
        );
        assert_eq!(code, Some(1), "{command}");
    }
    drop(mirror);
}
