//! First-seen checksum pinning through the spawned mirror, with real cargo:
//! an upstream that rewrites a published version's `cksum` after the mirror
//! first saw it gets the rewrite refused (the first-seen line is served,
//! counted and logged), while the rest of the rewritten file (a new version)
//! gets through.

use support::cargo::{project, run, CargoHome};
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

#[tokio::test]
async fn a_rewritten_checksum_is_refused_and_cargo_gets_the_first_seen_bytes() {
    let upstream = TestUpstream::start(&[CrateSpec::new("pinned", "1.0.0")], DlStyle::Plain);
    // TTL 0 and no stale serving: every request revalidates and waits for
    // it, so the rewrite is seen at once.
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--index-ttl", "0", "--index-max-stale", "0"])
        .start();
    let first = mirror
        .get("/index/pi/nn/pinned")
        .await
        .text()
        .await
        .unwrap();
    let body = upstream.index_body("pinned").unwrap();
    let original = cksum_of(&body, "1.0.0");
    assert!(first.contains(&original), "{first}");

    // The upstream publishes 1.1.0 and, in the same change, rewrites
    // 1.0.0's checksum (its tarball stays the original bytes).
    upstream.publish_all(&[CrateSpec::new("pinned", "1.1.0")]);
    let evil = "e".repeat(64);
    let rewritten = upstream
        .index_body("pinned")
        .unwrap()
        .replace(&original, &evil);
    upstream.set_index("pinned", 200, &rewritten);

    let served = mirror
        .get("/index/pi/nn/pinned")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(cksum_of(&served, "1.0.0"), original, "{served}");
    assert!(!served.contains(&evil), "{served}");
    assert!(served.contains("\"1.1.0\""), "the new version: {served}");
    let metrics = mirror.metrics().await;
    assert_eq!(metrics["crate_mirror_index_rewrites_refused_total"], 1.0);
    let log = mirror.log();
    let line = log
        .lines()
        .find(|line| line.contains(&evil))
        .unwrap_or_else(|| panic!("no log line names the offered checksum:\n{log}"));
    assert!(
        line.contains("pinned") && line.contains("1.0.0") && line.contains(&original),
        "{line}"
    );

    // Real cargo gets 1.0.0 checked against the first-seen checksum.
    let app = project(
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\npinned = \"=1.0.0\"\n",
    );
    let home = CargoHome::new(&mirror.index_url());
    let target = tempfile::tempdir().unwrap();
    let out = run(&home, app.path(), target.path(), &["fetch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lock = std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap();
    assert!(
        lock.contains(&format!("checksum = \"{original}\"")),
        "{lock}"
    );
    assert!(!lock.contains(&evil), "{lock}");
    // Revalidated by every request since, unchanged: counted once.
    let metrics = mirror.metrics().await;
    assert_eq!(metrics["crate_mirror_index_rewrites_refused_total"], 1.0);
    assert_eq!(metrics["crate_mirror_index_versions_removed_total"], 0.0);
}

/// The `cksum` of `vers` in an index file.
fn cksum_of(index: &str, vers: &str) -> String {
    index
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|record| record["vers"] == vers)
        .and_then(|record| record["cksum"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no {vers} in {index}"))
}

#[tokio::test]
async fn pins_outlive_a_restart_and_a_removed_version_is_counted_once() {
    let upstream = TestUpstream::start(
        &[
            CrateSpec::new("gone", "1.0.0"),
            CrateSpec::new("gone", "1.1.0"),
        ],
        DlStyle::Plain,
    );
    let body = upstream.index_body("gone").unwrap();
    let original = cksum_of(&body, "1.0.0");
    let data = tempfile::tempdir().unwrap();
    let args = ["--index-ttl", "0", "--index-max-stale", "0"];
    let before = Mirror::builder(&upstream.url)
        .data_dir(data.path())
        .args(&args)
        .start();
    let first = before.get("/index/go/ne/gone").await.text().await.unwrap();
    assert!(first.contains(&original), "{first}");
    before.stop();

    // The upstream drops 1.0.0: not served, counted once however often
    // the file is revalidated.
    let only_new: String = body
        .lines()
        .filter(|line| !line.contains(&original))
        .map(|line| format!("{line}\n"))
        .collect();
    upstream.set_index("gone", 200, &only_new);
    let after = Mirror::builder(&upstream.url)
        .data_dir(data.path())
        .args(&args)
        .start();
    for _ in 0..3 {
        let served = after.get("/index/go/ne/gone").await.text().await.unwrap();
        assert!(!served.contains(&original), "{served}");
        assert!(served.contains("\"1.1.0\""), "{served}");
    }
    let metrics = after.metrics().await;
    assert_eq!(metrics["crate_mirror_index_versions_removed_total"], 1.0);

    // Back with another checksum, after the restart: the pin from before
    // it holds. Only the checksum is pinned and the file stored last no
    // longer has the version's line, so the version is refused outright:
    // not served at all, rather than with the offered checksum.
    let evil = "e".repeat(64);
    upstream.set_index("gone", 200, &body.replace(&original, &evil));
    let served = after.get("/index/go/ne/gone").await.text().await.unwrap();
    assert!(!served.contains(&evil), "{served}");
    assert!(!served.contains("\"1.0.0\""), "{served}");
    assert!(served.contains("\"1.1.0\""), "{served}");
    let metrics = after.metrics().await;
    assert_eq!(metrics["crate_mirror_index_rewrites_refused_total"], 1.0);
}
