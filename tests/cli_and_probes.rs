//! The health probes and the HTTP worker threads (the settings' own tests are
//! in settings.rs).

use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

#[tokio::test]
async fn health_and_readiness() {
    let mut upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let health = mirror.get("/health").await;
    assert_eq!(health.status(), 200);
    let ready = mirror.get("/ready").await;
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["ready"], true);
    assert_eq!(report["upstream_config_known"], true);

    // A mirror that never reached the upstream's config.json is alive but not ready.
    upstream.stop();
    let orphan = Mirror::builder(&upstream.url).start();
    assert_eq!(orphan.get("/health").await.status(), 200);
    let ready = orphan.get("/ready").await;
    assert_eq!(ready.status(), 503);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["upstream_config_known"], false);
    assert_eq!(report["data_dir_writable"], true);
    assert_eq!(report["database_open"], true);
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
