//! The shipped Prometheus configuration scrapes a mirror whose `/metrics`
//! needs a token: real Prometheus, the shipped scrape job with only its
//! target changed and its token lines uncommented (naming the test's token
//! file), as its comment tells an operator to; the target must come up (a scrape
//! without the token would be a 401 and `CrateMirrorDown` would fire).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cargo::new_token;
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};
use support::{client, free_port, json_of};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs Prometheus on the shipped config with the targets and token file
/// replaced, scraping every second; returns it, once ready, and its API base URL.
async fn prometheus(dir: &Path, targets: &[&str], token_file: &Path) -> (Prometheus, String) {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/prometheus.yml"),
    )
    .unwrap();
    let config = shipped
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace(
            "          - mirror-1.example.com:8080\n          - mirror-2.example.com:8080\n",
            &targets
                .iter()
                .map(|target| format!("          - {target}\n"))
                .collect::<String>(),
        )
        // The token lines, commented out for open metrics, as an operator
        // of a mirror with metrics tokens uncomments them.
        .replace("    # authorization:", "    authorization:")
        .replace("    #   type: Bearer", "      type: Bearer")
        .replace(
            "    #   credentials_file: /etc/prometheus/crate-mirror-metrics-token",
            &format!("      credentials_file: {}", token_file.display()),
        )
        // The alert rules are checked by promtool elsewhere.
        .replace("rule_files:\n  - alerts.yml\n", "");
    assert!(
        targets.iter().all(|t| config.contains(t)),
        "the targets were not replaced"
    );
    assert!(
        config.contains("\n    authorization:\n      type: Bearer\n      credentials_file: "),
        "the token lines were not uncommented"
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's package, installed by .ci/run)");
    let prometheus = Prometheus(child);
    let api = format!("http://127.0.0.1:{port}");
    // It refuses connections at first, then answers its API with a 503 until
    // its storage is open: queries before `/-/ready` would fail.
    support::wait_until(Duration::from_secs(30), "Prometheus ready", || async {
        client()
            .get(format!("{api}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    (prometheus, api)
}

/// The health of the first scrape target, once Prometheus has scraped it.
async fn target_health(api: &str) -> Option<(String, String)> {
    let targets = client()
        .get(format!("{api}/api/v1/targets"))
        .send()
        .await
        .ok()?
        .json::<serde_json::Value>()
        .await
        .ok()?;
    let target = &targets["data"]["activeTargets"][0];
    let health = target["health"].as_str()?.to_string();
    (health != "unknown").then(|| (health, target["lastError"].as_str().unwrap_or("").into()))
}

#[tokio::test]
async fn the_shipped_scrape_job_reaches_a_mirror_whose_metrics_need_a_token() {
    let (token, hash) = new_token();
    let upstream = TestUpstream::start(&[CrateSpec::new("abc", "1.0.0")], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--metrics-tokens", &hash])
        .start();
    // Without the token the mirror refuses: what Prometheus would get.
    let refused = client()
        .get(format!("{}/metrics", mirror.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let target = mirror.url.trim_start_matches("http://").to_string();
    let (_prometheus, api) = prometheus(dir.path(), &[&target], &token_file).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(health) = target_health(&api).await {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the mirror"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health.0, "up", "scrape failed: {}", health.1);
    // And what it scraped is the mirror's: its build info is there.
    let query =
        json_of(client().get(format!("{api}/api/v1/query?query=crate_mirror_build_info"))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut result = query["data"]["result"].clone();
    while result.as_array().is_none_or(Vec::is_empty) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        result = json_of(client().get(format!("{api}/api/v1/query?query=crate_mirror_build_info")))
            .await["data"]["result"]
            .clone();
    }
    assert_eq!(result.as_array().map(Vec::len), Some(1), "{result}");
}

/// An instant query's result vector (empty on any failure, which the caller
/// asserts about); panics when Prometheus rejects the query itself.
async fn query(api: &str, expr: &str) -> Vec<serde_json::Value> {
    let answer = json_of(
        client()
            .get(format!("{api}/api/v1/query"))
            .query(&[("query", expr)]),
    )
    .await;
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every query of the shipped Grafana dashboard, with its `$job` and
/// `$instance` variables filled in as Grafana would, runs on real Prometheus
/// scraping two mirrors with different quotas; the per-node panels keep the
/// nodes apart (the storage panel shows each quota, not their sum), and one
/// chosen instance narrows them to that node.
#[tokio::test]
async fn the_grafana_queries_run_per_instance_on_real_prometheus() {
    let upstream = TestUpstream::start(&[CrateSpec::new("abc", "1.0.0")], DlStyle::Plain);
    let one = Mirror::builder(&upstream.url)
        .args(&["--max-storage", "1GiB"])
        .start();
    let two = Mirror::builder(&upstream.url)
        .args(&["--max-storage", "2GiB"])
        .start();
    for mirror in [&one, &two] {
        assert_eq!(mirror.get("/index/3/a/abc").await.status(), 200);
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "unused\n").unwrap();
    let instances: Vec<String> = [&one, &two]
        .iter()
        .map(|m| m.url.trim_start_matches("http://").to_string())
        .collect();
    let targets: Vec<&str> = instances.iter().map(String::as_str).collect();
    let (_prometheus, api) = prometheus(dir.path(), &targets, &token_file).await;

    // Grafana's variable queries: the job, then its instances.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = query(&api, "crate_mirror_build_info{job=~\"crate-mirror\"}").await;
        if found.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "both mirrors scraped: {found:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let grafana: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/crate-mirror.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let fill = |expr: &str, instance: &str| {
        expr.replace("$job", "crate-mirror")
            .replace("$instance", instance)
    };
    let mut storage_panel = None;
    for panel in grafana["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            // `.*` is the instance variable's "All".
            query(&api, &fill(expr, ".*")).await;
            if expr.starts_with("crate_mirror_storage_quota_bytes") {
                storage_panel = Some(expr.to_string());
            }
        }
    }
    let quota = storage_panel.expect("the storage panel shows the quota");
    let mut quotas: Vec<(String, String)> = query(&api, &fill(&quota, ".*"))
        .await
        .iter()
        .map(|sample| {
            (
                sample["metric"]["instance"].as_str().unwrap().to_string(),
                sample["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    quotas.sort();
    let mut expected = vec![
        (instances[0].clone(), "1073741824".to_string()),
        (instances[1].clone(), "2147483648".to_string()),
    ];
    expected.sort();
    assert_eq!(quotas, expected, "one quota per node, never their sum");
    let narrowed = query(&api, &fill(&quota, &instances[1])).await;
    assert_eq!(narrowed.len(), 1);
    assert_eq!(narrowed[0]["value"][1], "2147483648");
}
