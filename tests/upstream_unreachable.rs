//! A wrong or unreachable upstream: the mirror says why, once, at ERROR in
//! its log and in every 5xx a client gets (the upstream's URL without its
//! credentials and the cause's class), and its start-up fetch of
//! config.json opens no circuit before any client asked.
//!
//! Name resolution failures (`dns`) are not tested here: whether a lookup of
//! even a reserved name (`.invalid`) stays on the machine depends on its
//! resolver configuration, and tests touch no network.

use std::time::Duration;

use reqwest::StatusCode;
use support::cargo::{project, run, CargoHome};
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

/// What the start-up fetch may take at most, with its retries.
const STARTED: Duration = Duration::from_secs(30);

/// The lines the mirror logged at ERROR.
fn error_lines(mirror: &Mirror) -> Vec<String> {
    mirror
        .log()
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

/// `/ready` as JSON.
async fn ready(mirror: &Mirror) -> serde_json::Value {
    support::json_of(support::client().get(format!("{}/ready", mirror.url))).await
}

/// Waits until the start-up fetch of config.json has failed (all its tries).
async fn start_up_fetch_failed(mirror: &Mirror) {
    support::wait_until(
        STARTED,
        "the start-up config.json fetch never failed",
        || async { ready(mirror).await["upstream_config_fetch_ok"] == false },
    )
    .await;
}

/// The userinfo of the failing upstream's URL (the password must show
/// nowhere), and what the URL shows instead.
const CREDENTIALS: &str = "user:secret";
const MASKED: &str = "***";

/// GETs an index file from the mirror: its status and body.
async fn index_file(mirror: &Mirror) -> (StatusCode, String) {
    let response = support::get_within(&format!("{}/index/3/a/abc", mirror.url), STARTED).await;
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn a_closed_port_is_logged_once_keeps_the_circuit_closed_and_is_named_to_cargo() {
    let port = support::free_port();
    let upstream = format!("http://{CREDENTIALS}@127.0.0.1:{port}/index/");
    let shown = format!("http://{MASKED}@127.0.0.1:{port}/index/");
    let mirror = Mirror::builder(&upstream).start();

    // The start-up fetch and the probes after it (each /ready asks for
    // config.json again while none is known) leave the circuit closed.
    start_up_fetch_failed(&mirror).await;
    for _ in 0..3 {
        let report = ready(&mirror).await;
        assert_eq!(report["upstream_config_fetch_ok"], false, "{report}");
        assert_eq!(report["upstream_circuit_open"], false, "{report}");
    }
    let metrics = mirror.metrics().await;
    assert_eq!(metrics["crate_mirror_upstream_circuit_open"], 0.0);

    // So a client's first request still goes to the upstream, and its
    // answer names the upstream and the cause.
    let (status, body) = index_file(&mirror).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains(&shown), "{body}");
    assert!(body.contains("connection refused"), "{body}");
    assert!(!body.contains("secret"), "{body}");

    // Real cargo prints it (a 502, or a 503 once its own retry opened the
    // circuit: both name the upstream and the cause).
    let home = CargoHome::new(&mirror.index_url());
    let app = project(
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nabc = \"1\"\n",
    );
    let target = tempfile::tempdir().unwrap();
    let out = run(&home, app.path(), target.path(), &["generate-lockfile"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&shown), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");

    // One ERROR line for all those failures, naming the upstream and the
    // cause; the password is nowhere in the log.
    let errors = error_lines(&mirror);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains(&shown), "{}", errors[0]);
    assert!(errors[0].contains("connection refused"), "{}", errors[0]);
    assert!(!mirror.log().contains("secret"), "{}", mirror.log());
}

#[tokio::test]
async fn an_upstream_whose_certificate_is_not_trusted_is_a_tls_failure() {
    // An HTTPS upstream (a mirror serving TLS) with a CA that the mirror in
    // front of it was not told to trust.
    let certs = tempfile::tempdir().unwrap();
    support::tls::make_certificates(certs.path());
    let origin = TestUpstream::start(&[CrateSpec::new("abc", "1.0.0")], DlStyle::Plain);
    let https = Mirror::builder(&origin.url).tls(certs.path()).start();
    let upstream = https.index_url();
    assert!(upstream.starts_with("https://"), "{upstream}");
    let mirror = Mirror::builder(&upstream).start();

    start_up_fetch_failed(&mirror).await;
    let (status, body) = index_file(&mirror).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains(&upstream), "{body}");
    assert!(body.contains("failed: tls"), "{body}");

    let errors = error_lines(&mirror);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains(&upstream), "{}", errors[0]);
    assert!(errors[0].contains("cause=tls"), "{}", errors[0]);
}

#[tokio::test]
async fn an_upstream_url_that_is_no_registry_is_logged_with_its_status() {
    // The test upstream's root, not its index: config.json is not there.
    let origin = TestUpstream::start(&[CrateSpec::new("abc", "1.0.0")], DlStyle::Plain);
    let upstream = origin.url.trim_end_matches("index/").to_string();
    let mirror = Mirror::builder(&upstream).start();

    start_up_fetch_failed(&mirror).await;
    let errors = error_lines(&mirror);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains(&upstream), "{}", errors[0]);
    assert!(errors[0].contains("cause=http 404"), "{}", errors[0]);
}
