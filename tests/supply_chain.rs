//! The supply-chain policy through the spawned mirror, with real cargo: a
//! release cooldown (`min-release-age`, both modes, exemptions) and the deny
//! list, against a test upstream whose index lines carry `pubtime` set
//! relative to now. Coming of age at the instant is shown in-process, with
//! the cache's movable clock (tests/index_freshness.rs).

use std::path::Path;
use std::time::Duration;

use support::cargo::{project, run, CargoHome};
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

const DAY: Duration = Duration::from_secs(24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

/// `cool`: 1.0.0 ten days old, 1.1.0 five days, 1.2.0 an hour. `fresh` and
/// `urgent`: 1.0.0 ten days old, and a version an hour old each.
fn registry() -> Vec<CrateSpec> {
    vec![
        CrateSpec::new("cool", "1.0.0").published_ago(10 * DAY),
        CrateSpec::new("cool", "1.1.0").published_ago(5 * DAY),
        CrateSpec::new("cool", "1.2.0").published_ago(HOUR),
        CrateSpec::new("fresh", "1.0.0").published_ago(10 * DAY),
        CrateSpec::new("fresh", "1.1.0").published_ago(HOUR),
        CrateSpec::new("urgent", "1.0.0").published_ago(10 * DAY),
        CrateSpec::new("urgent", "1.0.1").published_ago(HOUR),
    ]
}

/// A project `app` with these `[dependencies]` lines.
fn manifest(dependencies: &str) -> String {
    format!(
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{dependencies}"
    )
}

/// Needs every crate of `registry()`.
fn all_three() -> String {
    manifest("cool = \"1\"\nfresh = \"1\"\nurgent = \"1\"\n")
}

/// The version of `name` that `lock` pins.
fn locked(lock: &str, name: &str) -> String {
    let head = format!("name = \"{name}\"\nversion = \"");
    let start = lock
        .find(&head)
        .unwrap_or_else(|| panic!("{name} not in\n{lock}"))
        + head.len();
    lock[start..].split('"').next().unwrap().to_string()
}

fn lock_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("Cargo.lock")).expect("Cargo.lock")
}

/// cargo ARGS through `mirror`: (succeeded, stderr).
fn cargo(mirror: &Mirror, project: &Path, args: &[&str]) -> (bool, String) {
    let home = CargoHome::new(&mirror.index_url());
    let target = tempfile::tempdir().unwrap();
    let out = run(&home, project, target.path(), args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_cooldown_resolves_to_versions_old_enough_or_exempt() {
    let upstream = TestUpstream::start(&registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&[
            "--min-release-age",
            "72h",
            "--release-age-exempt",
            "fresh; urgent@>=1.0.1, <2",
        ])
        .start();
    let app = project(&all_three());
    let (ok, stderr) = cargo(&mirror, app.path(), &["generate-lockfile"]);
    assert!(ok, "{stderr}");
    let lock = lock_of(app.path());
    assert_eq!(locked(&lock, "cool"), "1.1.0", "the newest older than 72 h");
    assert_eq!(locked(&lock, "fresh"), "1.1.0", "exempt by name");
    assert_eq!(locked(&lock, "urgent"), "1.0.1", "exempt by requirement");
}

#[test]
fn a_lockfile_pinning_a_young_version_builds_in_yank_mode_only() {
    let upstream = TestUpstream::start(&registry(), DlStyle::Plain);
    // Made before the policy: straight from the upstream, it pins cool 1.2.0.
    let app = project(&manifest("cool = \"1\"\n"));
    let direct = CargoHome::new(&upstream.url);
    let target = tempfile::tempdir().unwrap();
    direct.run_ok(app.path(), target.path(), &["generate-lockfile"]);
    let before = lock_of(app.path());
    assert_eq!(locked(&before, "cool"), "1.2.0");

    let yank = Mirror::builder(&upstream.url)
        .args(&["--min-release-age", "3d", "--min-release-age-mode", "yank"])
        .start();
    let (ok, stderr) = cargo(&yank, app.path(), &["build", "--locked"]);
    assert!(ok, "a yanked version stays usable when locked:\n{stderr}");
    assert!(stderr.contains("Downloaded cool v1.2.0"), "{stderr}");
    assert_eq!(lock_of(app.path()), before);

    let hide = Mirror::builder(&upstream.url)
        .args(&["--min-release-age", "3d", "--min-release-age-mode", "hide"])
        .start();
    let (ok, stderr) = cargo(&hide, app.path(), &["build", "--locked"]);
    assert!(!ok, "a hidden version is gone, locked or not:\n{stderr}");
    eprintln!("cargo with a lockfile pinning a hidden version:\n{stderr}");
    assert!(
        stderr.contains(
            "failed to select a version for the requirement `cool = \"^1\"` (locked to 1.2.0)"
        ),
        "{stderr}"
    );
    assert_eq!(lock_of(app.path()), before, "--locked kept the lockfile");
    // Without --locked, the same: the lockfile is not silently rewritten.
    let (ok, stderr) = cargo(&hide, app.path(), &["build"]);
    assert!(!ok && stderr.contains("(locked to 1.2.0)"), "{stderr}");
    // `cargo update` moves it to the newest version served.
    let (ok, stderr) = cargo(&hide, app.path(), &["update", "cool"]);
    assert!(ok, "{stderr}");
    assert_eq!(locked(&lock_of(app.path()), "cool"), "1.1.0");
}

#[tokio::test]
async fn cargo_resolves_around_a_denied_version_and_its_download_is_refused() {
    let upstream = TestUpstream::start(&registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--deny", "cool@>=1.2; evil-crate"])
        .start();
    let app = project(&all_three());
    let (ok, stderr) = cargo(&mirror, app.path(), &["generate-lockfile"]);
    assert!(ok, "{stderr}");
    let lock = lock_of(app.path());
    assert_eq!(locked(&lock, "cool"), "1.1.0");
    assert_eq!(locked(&lock, "fresh"), "1.1.0", "no cooldown configured");

    let denied = mirror.get("/api/v1/crates/cool/1.2.0/download").await;
    assert_eq!(denied.status(), 403);
    let body = denied.text().await.unwrap();
    assert_eq!(body, "refused by the mirror's deny rule \"cool@>=1.2\"\n");
    assert_eq!(upstream.count_matching("1.2.0"), 0);
    let allowed = mirror.get("/api/v1/crates/cool/1.1.0/download").await;
    assert_eq!(allowed.status(), 200);
}

#[tokio::test]
async fn a_version_denied_after_it_was_stored_is_refused_and_the_index_follows_the_new_policy() {
    let upstream = TestUpstream::start(&registry(), DlStyle::Plain);
    let data = tempfile::tempdir().unwrap();
    let before = Mirror::builder(&upstream.url).data_dir(data.path()).start();
    let stored = before.get("/api/v1/crates/cool/1.2.0/download").await;
    assert_eq!(stored.status(), 200);
    let index = before.get("/index/co/ol/cool").await.text().await.unwrap();
    assert!(index.contains("\"1.2.0\""));
    before.stop();

    // Restarted with the rule: the stored crate and the cached index file
    // are both there, and neither is served.
    let after = Mirror::builder(&upstream.url)
        .data_dir(data.path())
        .args(&["--deny", "cool@=1.2.0"])
        .start();
    let index = after.get("/index/co/ol/cool").await;
    assert_eq!(index.headers()["x-cache"], "HIT", "from the stored record");
    let index = index.text().await.unwrap();
    assert!(!index.contains("\"1.2.0\"") && index.contains("\"1.1.0\""));
    let denied = after.get("/api/v1/crates/cool/1.2.0/download").await;
    assert_eq!(denied.status(), 403);
    assert_eq!(
        denied.text().await.unwrap(),
        "refused by the mirror's deny rule \"cool@=1.2.0\"\n"
    );
    assert_eq!(upstream.count_matching("1.2.0"), 1, "fetched once, before");
}
