//! Dependency-aware prefetch: the same Cargo.lock with it on; on a real slice of
//! the registry index, at least 80% of prefetched files asked for by cargo and
//! upstream requests within 1.2x of those without prefetch; clients that never
//! wait behind a prefetch. (How much faster a cold resolve gets is measured by
//! `cargo bench --bench resolution`, not asserted here.)

use std::path::Path;
use std::time::Duration;

use support::bench::real_index::{unpack_index, workload_manifest};
use support::cargo::{project, CargoHome};
use support::client;
use support::mirror::Mirror;
use support::registry::{layered_graph, CrateSpec, Dep};
use support::upstream::{DlStyle, TestUpstream};

fn index_requests(upstream: &TestUpstream) -> usize {
    upstream.count_matching("/index/") - upstream.count("/index/config.json")
}

async fn stats(mirror: &Mirror) -> serde_json::Value {
    mirror.stats().await
}

/// GETs index file `path` of `mirror`, failing the test unless it is
/// answered within five seconds: a client kept waiting behind prefetches is
/// what these tests look for.
async fn index_file_within(mirror: &Mirror, path: &str) -> reqwest::Response {
    let url = format!("{}{path}", mirror.index_url());
    support::get_within(&url, Duration::from_secs(5)).await
}

#[tokio::test]
async fn prefetch_keeps_the_lockfile_and_stays_within_budget_of_upstream_requests() {
    let (specs, manifest) = layered_graph(6, 12);
    let target = tempfile::tempdir().unwrap();
    let resolve = |mirror: &Mirror| {
        let app = project(&manifest);
        CargoHome::new(&mirror.index_url()).run_ok(
            app.path(),
            target.path(),
            &["generate-lockfile"],
        );
        std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap()
    };

    let direct_upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let app = project(&manifest);
    CargoHome::new(&direct_upstream.url).run_ok(app.path(), target.path(), &["generate-lockfile"]);
    let direct_lock = std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap();

    let off_upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let off = Mirror::builder(&off_upstream.url)
        .args(&["--prefetch", "off"])
        .start();
    assert_eq!(resolve(&off), direct_lock);
    let without = index_requests(&off_upstream);

    let on_upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let on = Mirror::builder(&on_upstream.url)
        .args(&["--prefetch-depth", "6"])
        .start();
    assert_eq!(resolve(&on), direct_lock, "prefetch changed the resolution");
    // Prefetches may still be finishing; they count against the bound too.
    settle(&on_upstream).await;
    let with = index_requests(&on_upstream);
    assert!(
        with as f64 <= 1.5 * without as f64,
        "{with} upstream index requests with prefetch, {without} without"
    );
    let prefetch = &stats(&on).await["prefetch"];
    let started = prefetch["started"].as_u64().unwrap();
    let useful = prefetch["useful"].as_u64().unwrap();
    assert!(started > 0, "nothing was prefetched");
    assert!(useful > 0 && useful <= started, "{prefetch}");
    // The old series and the dev-dependencies were not followed: every
    // prefetched file was one cargo asked for.
    assert_eq!(useful, started, "{prefetch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_never_wait_behind_a_prefetch() {
    let mut hub = CrateSpec::new("hub", "1.0.0");
    let mut specs = vec![CrateSpec::new("unrelated", "1.0.0")];
    for n in 0..20 {
        let name = format!("held{n:02}");
        hub = hub.dep(Dep::new(&name, "1"));
        specs.push(CrateSpec::new(&name, "1.0.0"));
    }
    specs.push(hub);
    let upstream = TestUpstream::start(&specs, DlStyle::Plain);
    // As many prefetch slots as held files: every slot ends up stuck.
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--prefetch-concurrency", "20"])
        .start();
    assert_eq!(mirror.get("/ready").await.status(), 200);
    // Every dependency of hub stalls upstream: prefetch fills all its slots.
    upstream
        .switches
        .held
        .lock()
        .unwrap()
        .push("/index/he/ld/".to_string());

    // hub itself does not wait behind its own prefetches.
    let hub_response = index_file_within(&mirror, "3/h/hub").await;
    assert_eq!(hub_response.status(), 200);
    // The prefetches are held upstream: wait until all of them have arrived
    // there (and no more than them).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while upstream.count_matching("/index/he/ld/") < 20 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.count_matching("/index/he/ld/"),
        20,
        "the prefetches did not all start"
    );

    // An unrelated file is answered at once, with every prefetch slot stuck.
    let unrelated = index_file_within(&mirror, "un/re/unrelated").await;
    assert_eq!(unrelated.status(), 200);

    // A client asking for a file being prefetched (its request is already
    // upstream) joins that fetch instead of making another.
    let joining = tokio::spawn({
        let url = format!("{}he/ld/held00", mirror.index_url());
        async move { client().get(url).send().await.unwrap().status() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    upstream.switches.held.lock().unwrap().clear();
    assert_eq!(joining.await.unwrap(), 200);
    assert_eq!(
        upstream.count("/index/he/ld/held00"),
        1,
        "the client did not join the prefetch"
    );
    // Joined, not merely served after the prefetch landed.
    assert_eq!(mirror.stats().await["index"]["coalesced_waits"], 1);
}

/// Waits until the upstream has seen no new request for a while: prefetches
/// still running after cargo finished count against prefetch too.
async fn settle(upstream: &TestUpstream) {
    let mut last = upstream.total_requests();
    let mut quiet = 0;
    while quiet < 4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = upstream.total_requests();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

struct Measured {
    lockfile: String,
    index_requests: usize,
    /// Index files the upstream was asked for.
    files: std::collections::BTreeSet<String>,
    prefetch: serde_json::Value,
}

/// Resolves `manifest` with real cargo (fresh CARGO_HOME) through a fresh
/// mirror of a fresh upstream serving `index`.
async fn resolve_through_mirror(index: &Path, manifest: &str, args: &[&str]) -> Measured {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    assert_eq!(upstream.serve_index_dir(index), 626);
    let mirror = Mirror::builder(&upstream.url).args(args).start();
    let app = project(manifest);
    let target = tempfile::tempdir().unwrap();
    CargoHome::new(&mirror.index_url()).run_ok(app.path(), target.path(), &["generate-lockfile"]);
    settle(&upstream).await;
    Measured {
        lockfile: std::fs::read_to_string(app.path().join("Cargo.lock")).unwrap(),
        index_requests: index_requests(&upstream),
        files: upstream
            .seen()
            .into_iter()
            .filter(|seen| seen.path.starts_with("/index/") && seen.path != "/index/config.json")
            .map(|seen| seen.path)
            .collect(),
        prefetch: stats(&mirror).await["prefetch"].clone(),
    }
}

#[tokio::test]
async fn prefetch_on_real_index_is_mostly_useful() {
    // The real index slice (see tests/fixtures/real-index/README.md): 626
    // files cargo asked for while resolving three real manifests.
    let (_temp, index) = unpack_index();
    let mut report = Vec::new();
    for workload in ["web", "cli", "gamedev"] {
        let manifest = workload_manifest(workload);
        let off = resolve_through_mirror(&index, &manifest, &["--prefetch", "off"]).await;
        // Default prefetch settings: what is measured here is what ships.
        let on = resolve_through_mirror(&index, &manifest, &[]).await;
        assert_eq!(
            on.lockfile, off.lockfile,
            "{workload}: prefetch changed the resolution"
        );
        let count = |field: &str| on.prefetch[field].as_u64().unwrap();
        let (started, useful, wasted) = (count("started"), count("useful"), count("wasted"));
        let line = format!(
            "{workload}: prefetch started {started}, useful {useful}, wasted {wasted}; \
             upstream index requests {} with prefetch, {} without",
            on.index_requests, off.index_requests
        );
        eprintln!("{line}");
        // What cargo never asked for, to see why when the ratio drops.
        let unused: Vec<_> = on.files.difference(&off.files).collect();
        eprintln!(
            "{workload}: {} files fetched only with prefetch: {unused:?}",
            unused.len()
        );
        report.push(line);
        assert!(started > 0, "{workload}: nothing was prefetched");
        assert!(useful <= started, "{}", on.prefetch);
        assert!(
            useful as f64 >= 0.8 * started as f64,
            "{workload}: under 80% of prefetches were used: {report:#?}"
        );
        assert!(
            on.index_requests as f64 <= 1.2 * off.index_requests as f64,
            "{workload}: too many upstream requests with prefetch: {report:#?}"
        );
    }
}
