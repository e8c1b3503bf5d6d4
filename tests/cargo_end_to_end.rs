//! Real cargo, end to end: a generated registry of 23 crates (327 versions, 301
//! of them one crate's) resolved and built
//! through the mirror, compared with resolving against the upstream directly,
//! then resolved and built again from the mirror's cache with the upstream gone.

use support::cargo::{project, run_ok, CargoHome};
use support::mirror::Mirror;
use support::registry::{graph_project_manifest, graph_registry};
use support::upstream::{DlStyle, TestUpstream};

#[test]
fn cargo_resolves_and_builds_through_the_mirror_cold_warm_and_offline() {
    let mut upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    // A TTL of 1s: by the offline run every index file is expired, so it is
    // answered from stale copies, not from fresh ones.
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--index-ttl", "1"])
        .start();
    let target = tempfile::tempdir().unwrap();

    // Directly against the test upstream.
    let direct_home = CargoHome::new(&upstream.url);
    let direct = project(&graph_project_manifest());
    direct_home.run_ok(direct.path(), target.path(), &["generate-lockfile"]);
    let direct_lock = std::fs::read_to_string(direct.path().join("Cargo.lock")).unwrap();

    // Through the mirror, cold.
    let home = CargoHome::new(&mirror.index_url());
    let through = project(&graph_project_manifest());
    run_ok(&home, through.path(), target.path(), &["generate-lockfile"]);
    let mirror_lock = std::fs::read_to_string(through.path().join("Cargo.lock")).unwrap();
    assert_eq!(
        mirror_lock, direct_lock,
        "Cargo.lock differs through the mirror"
    );
    for expected in [
        "name = \"MixedCase\"",
        "version = \"1.0.0+build.7\"",
        "name = \"real-name\"",
        "name = \"opt-dep\"",
        "name = \"win-only\"",
    ] {
        assert!(mirror_lock.contains(expected), "lockfile lacks {expected}");
    }
    // The yanked 1.0.1 is not chosen for a new lockfile.
    assert!(mirror_lock.contains("name = \"yanky\"\nversion = \"1.0.0\""));
    // Both series of one crate are in the graph.
    assert!(mirror_lock.contains("name = \"old-series\"\nversion = \"1.0.0\""));
    assert!(mirror_lock.contains("name = \"old-series\"\nversion = \"2.0.0\""));

    let stderr = run_ok(&home, through.path(), target.path(), &["build"]);
    assert!(stderr.contains("Downloaded"), "{stderr}");
    let crates_fetched = upstream.count_matching("/dl/");
    assert!(
        crates_fetched >= 20,
        "only {crates_fetched} crates fetched upstream"
    );
    assert_eq!(mirror.stored_files(".crate").len(), crates_fetched);

    // The upstream disappears; a fresh CARGO_HOME and a fresh project resolve
    // and build from the mirror alone.
    upstream.stop();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let offline_home = CargoHome::new(&mirror.index_url());
    let offline = project(&graph_project_manifest());
    let offline_target = tempfile::tempdir().unwrap();
    offline_home.run_ok(
        offline.path(),
        offline_target.path(),
        &["generate-lockfile"],
    );
    let offline_lock = std::fs::read_to_string(offline.path().join("Cargo.lock")).unwrap();
    assert_eq!(offline_lock, direct_lock);
    offline_home.run_ok(offline.path(), offline_target.path(), &["build"]);
    assert!(
        mirror.log().contains("serving stale index file"),
        "the offline resolve was not answered from stale copies"
    );
}
