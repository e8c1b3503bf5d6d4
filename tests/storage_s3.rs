//! The S3 backend against a real S3-compatible server (Garage): cargo fills the
//! bucket through one mirror, a fresh mirror serves it with the upstream gone,
//! bad uploads never appear under a final key, presigned redirects, verify.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use support::cargo::{project, run_ok, CargoHome};
use support::client;
use support::mirror::Mirror;
use support::registry::{graph_project_manifest, graph_registry, publish, CrateSpec, Published};
use support::s3::Garage;
use support::upstream::{DlStyle, TestUpstream};

const S3: [&str; 2] = ["--storage", "s3://crates"];

/// The storage key of a crate version (the layout every backend shares).
fn key_of(name: &str, version: &str) -> String {
    crate_mirror::storage::crate_key(&name.to_ascii_lowercase(), version)
}

/// (name, version) of every registry package in a Cargo.lock.
fn locked_packages(lockfile: &str) -> Vec<(String, String)> {
    let lock: toml::Table = lockfile.parse().expect("Cargo.lock parses");
    lock["package"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p.get("source").is_some())
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A test upstream serving `p` alone.
fn serving(p: &Published) -> TestUpstream {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    upstream.add(p);
    upstream
}

/// A mirror of `upstream` storing in `garage` under the usual prefix.
fn s3_mirror(upstream: &TestUpstream, garage: &Garage) -> Mirror {
    Mirror::builder(&upstream.url)
        .args(&S3)
        .envs(&garage.env())
        .start()
}

#[tokio::test]
async fn cargo_fills_the_bucket_and_a_fresh_mirror_serves_it_without_the_upstream() {
    let garage = Garage::start();
    let specs = graph_registry();
    let tarballs: BTreeMap<String, Vec<u8>> = specs
        .iter()
        .map(|s| (key_of(&s.name, &s.vers), publish(s).tarball))
        .collect();
    let mut upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let mirror = s3_mirror(&upstream, &garage);

    let home = CargoHome::new(&mirror.index_url());
    let workspace = project(&graph_project_manifest());
    let target = tempfile::tempdir().unwrap();
    home.run_ok(workspace.path(), target.path(), &["generate-lockfile"]);
    run_ok(&home, workspace.path(), target.path(), &["fetch"]);
    let lockfile = std::fs::read_to_string(workspace.path().join("Cargo.lock")).unwrap();
    let locked = locked_packages(&lockfile);
    assert!(locked.len() >= 20);

    // Every locked crate is in the bucket, byte for byte, and nothing else is.
    let objects = garage.objects().await;
    let mut expected_keys: Vec<String> = locked.iter().map(|(n, v)| key_of(n, v)).collect();
    expected_keys.sort();
    let keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, expected_keys);
    for key in &keys {
        assert_eq!(garage.get(key).await.unwrap(), tarballs[key], "{key}");
    }
    assert!(
        mirror.stored_files(".crate").is_empty(),
        "crates were kept on local disk"
    );
    assert!(mirror.stored_files(".part").is_empty());
    assert_eq!(upstream.count_matching("/dl/"), locked.len());

    // verify lists and re-hashes the bucket.
    let verify = mirror.run_command_with_env("verify", &upstream.url, &S3, &garage.env());
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("checked {0}, good {0}, bad 0", locked.len())),
        "{stdout}"
    );

    // A second mirror with an empty data dir, the upstream gone: all from the bucket.
    upstream.stop();
    let fresh = s3_mirror(&upstream, &garage);
    for (name, version) in &locked {
        let response = fresh
            .get(&format!("/api/v1/crates/{name}/{version}/download"))
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{name} {version}");
        assert_eq!(response.headers()["x-cache"], "HIT");
        assert_eq!(
            response.bytes().await.unwrap(),
            tarballs[&key_of(name, version)]
        );
    }
}

#[tokio::test]
async fn bad_upstream_bodies_never_reach_a_final_key() {
    let garage = Garage::start();
    let big = publish(&CrateSpec::new("big", "1.0.0").padding(12 << 20));
    let upstream = serving(&big);
    let mirror = s3_mirror(&upstream, &garage);
    let url = format!("{}/api/v1/crates/big/1.0.0/download", mirror.url);

    for (failed, switch) in [
        &upstream.switches.truncate_downloads,
        &upstream.switches.corrupt_downloads,
    ]
    .into_iter()
    .enumerate()
    {
        switch.store(true, Ordering::SeqCst);
        let response = client().get(&url).send().await.unwrap();
        let whole = match response.status() {
            StatusCode::OK => response.bytes().await.is_ok_and(|b| b == big.tarball),
            _ => false,
        };
        assert!(!whole, "a bad body was delivered whole");
        // The mirror logs the failure once it has cleaned up after it: from
        // then on nothing of this fetch can reach the bucket.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while mirror.log().matches("crate download failed").count() <= failed {
            assert!(std::time::Instant::now() < deadline, "no failure logged");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            garage.objects().await,
            vec![],
            "a bad body reached the bucket"
        );
        switch.store(false, Ordering::SeqCst);
    }
    // A good body of 12 MiB goes up as a multipart upload and comes back whole.
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.bytes().await.unwrap(), big.tarball);
    assert_eq!(
        garage.objects().await,
        vec![(key_of("big", "1.0.0"), big.tarball.len() as u64)]
    );
    assert!(mirror.stored_files(".part").is_empty());
}

#[tokio::test]
async fn hits_can_redirect_to_presigned_urls() {
    let garage = Garage::start();
    let p = publish(&CrateSpec::new("redirected", "0.1.0"));
    let upstream = serving(&p);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--storage", "s3://crates/mirror-prefix", "--s3-redirect"])
        .envs(&garage.env())
        .start();
    let url = format!("{}/api/v1/crates/redirected/0.1.0/download", mirror.url);
    // The miss streams through the mirror.
    let miss = client().get(&url).send().await.unwrap();
    assert_eq!(miss.headers()["x-cache"], "MISS");
    assert_eq!(miss.bytes().await.unwrap(), p.tarball);
    assert!(garage
        .get(&format!("mirror-prefix/{}", key_of("redirected", "0.1.0")))
        .await
        .is_some());

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let hit = no_redirects.get(&url).send().await.unwrap();
    assert_eq!(hit.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = hit.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&garage.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    // Clients (cargo included) follow it to the bytes.
    let followed = client().get(&url).send().await.unwrap();
    assert_eq!(followed.status(), StatusCode::OK);
    assert_eq!(followed.bytes().await.unwrap(), p.tarball);
    assert_eq!(upstream.count_matching("/dl/"), 1);
}

#[tokio::test]
async fn verify_removes_a_corrupted_object_and_it_is_fetched_again() {
    let garage = Garage::start();
    let p = publish(&CrateSpec::new("fragile", "2.0.0"));
    let upstream = serving(&p);
    let mirror = s3_mirror(&upstream, &garage);
    let url = format!("{}/api/v1/crates/fragile/2.0.0/download", mirror.url);
    assert_eq!(
        client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        p.tarball
    );

    let key = key_of("fragile", "2.0.0");
    let mut corrupt = p.tarball.clone();
    corrupt[10] ^= 0xff;
    garage.put(&key, corrupt).await;
    let verify = mirror.run_command_with_env("verify", &upstream.url, &S3, &garage.env());
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("bad {key}")), "{stdout}");
    assert!(garage.get(&key).await.is_none());

    let again = client().get(&url).send().await.unwrap();
    assert_eq!(again.headers()["x-cache"], "MISS");
    assert_eq!(again.bytes().await.unwrap(), p.tarball);
    assert_eq!(garage.get(&key).await.unwrap(), p.tarball);
}

/// The environment for S3 storage on `garage` without the credential settings.
fn env_without_keys(garage: &Garage) -> Vec<(String, String)> {
    garage
        .env()
        .into_iter()
        .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY")
        .collect()
}

/// `/ready`: its status and its JSON.
async fn readiness(mirror: &Mirror) -> (StatusCode, serde_json::Value) {
    let response = client()
        .get(format!("{}/ready", mirror.url))
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .expect("ready answers");
    let status = response.status();
    (status, response.json().await.expect("ready JSON"))
}

/// Polls `/ready` until its status is `want` (within `limit`); the last answer.
async fn ready_becomes(
    mirror: &Mirror,
    want: StatusCode,
    limit: std::time::Duration,
) -> (StatusCode, serde_json::Value) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (status, report) = readiness(mirror).await;
        if status == want || std::time::Instant::now() > deadline {
            return (status, report);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn s3_without_credentials_refuses_to_start() {
    let garage = Garage::start();
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(S3)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("CRATE_MIRROR_S3_INSTANCE_CREDENTIALS")
        .envs(env_without_keys(&garage))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn crate-mirror");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let status = status.unwrap_or_else(|| panic!("started without credentials: {stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // One line names every way to give credentials.
    let line = stderr
        .lines()
        .find(|line| line.contains("no credentials"))
        .unwrap_or_else(|| panic!("no credentials error: {stderr}"));
    for setting in [
        "aws-access-key-id",
        "AWS_ACCESS_KEY_ID",
        "aws-secret-access-key",
        "AWS_SECRET_ACCESS_KEY",
        "s3-instance-credentials",
    ] {
        assert!(line.contains(setting), "{setting} not named: {line}");
    }
    // Said once, on its own line, without anyhow's cause list or a backtrace.
    assert!(line.starts_with("crate-mirror: "), "{stderr}");
    assert_eq!(stderr.matches("no credentials").count(), 1, "{stderr}");
    assert!(!stderr.contains("Caused by"), "{stderr}");
    assert_eq!(garage.objects().await, vec![]);
}

#[tokio::test]
async fn s3_with_a_wrong_secret_is_not_ready_and_says_why() {
    let garage = Garage::start();
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let mut env = env_without_keys(&garage);
    let right = garage.env();
    let key_id = right
        .iter()
        .find(|(k, _)| k == "AWS_ACCESS_KEY_ID")
        .map(|(_, v)| v.clone())
        .unwrap();
    env.push(("AWS_ACCESS_KEY_ID".into(), key_id));
    let wrong = Garage::SECRET.replace('0', "1");
    env.push(("AWS_SECRET_ACCESS_KEY".into(), wrong));
    let mirror = Mirror::builder(&upstream.url).args(&S3).envs(&env).start();
    let (status, report) = readiness(&mirror).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    assert_eq!(report["ready"], false, "{report}");
    assert_eq!(report["storage_ok"], false, "{report}");
    let reason = report["storage_error"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "{report}");

    // The right keys: ready.
    let good = s3_mirror(&upstream, &garage);
    let (status, report) = ready_becomes(&good, StatusCode::OK, Duration::from_secs(10)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["storage_ok"], true, "{report}");
    assert!(report.get("storage_error").is_none(), "{report}");
}

#[tokio::test]
async fn s3_readiness_follows_the_bucket() {
    let mut garage = Garage::start();
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let mirror = s3_mirror(&upstream, &garage);
    let (status, report) = ready_becomes(&mirror, StatusCode::OK, Duration::from_secs(10)).await;
    assert_eq!(status, StatusCode::OK, "{report}");

    garage.stop();
    let started = std::time::Instant::now();
    let (status, report) = ready_becomes(
        &mirror,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    assert_eq!(report["ready"], false, "{report}");
    assert_eq!(report["storage_ok"], false, "{report}");
    assert!(report["storage_error"].as_str().is_some(), "{report}");
    // The node's own probes decide: the upstream answers all along.
    assert_eq!(report["upstream_config_known"], true, "{report}");
    assert_eq!(report["data_dir_writable"], true, "{report}");
    // Each probe is bounded: a dead bucket does not hang /ready.
    assert!(started.elapsed() < Duration::from_secs(20));

    garage.restart();
    let (status, report) = ready_becomes(&mirror, StatusCode::OK, Duration::from_secs(30)).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["storage_ok"], true, "{report}");
}
