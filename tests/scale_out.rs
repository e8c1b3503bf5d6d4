//! Scale-out: two mirrors on one S3 bucket behind Debian's nginx with the shipped
//! configuration. A cargo fetch completes while one mirror is killed in the
//! middle of it, and a fresh CARGO_HOME resolves and fetches with that mirror
//! down.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::cargo::{project, run_ok, CargoHome};
use support::free_port;
use support::mirror::Mirror;
use support::nginx::Nginx;
use support::registry::{graph_project_manifest, graph_registry};
use support::s3::Garage;
use support::upstream::{DlStyle, TestUpstream};

const S3: [&str; 2] = ["--storage", "s3://crates"];

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Runs nginx with deploy/nginx/nginx.conf, changing only the three ports.
fn start_nginx(backends: [u16; 2]) -> Nginx {
    let listen = free_port();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/nginx.conf"),
    )
    .unwrap();
    let config = shipped
        .replace("listen 8080;", &format!("listen 127.0.0.1:{listen};"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", backends[0]))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", backends[1]));
    assert_ne!(config, shipped);
    Nginx::start(&config, listen)
        .unwrap_or_else(|why| panic!("{why} (Debian's nginx package, installed by .ci/run)"))
}

fn lockfile(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("Cargo.lock")).unwrap()
}

#[test]
fn two_mirrors_behind_nginx_survive_losing_one_mid_fetch() {
    let garage = Garage::start();
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mut first = Mirror::builder(&upstream.url)
        .args(&S3)
        .envs(&garage.env())
        .start();
    let second = Mirror::builder(&upstream.url)
        .args(&S3)
        .envs(&garage.env())
        .start();
    let nginx = start_nginx([port_of(&first.url), port_of(&second.url)]);
    let index_url = format!("{}/index/", nginx.url);

    // Slow every upstream answer so the fetch is still running at the kill.
    upstream.switches.delay_ms.store(150, Ordering::SeqCst);
    let home = CargoHome::new(&index_url);
    let app = project(&graph_project_manifest());
    let target = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let app_path = app.path().to_path_buf();
    let target_path = target.path().to_path_buf();
    let fetch = std::thread::spawn(move || {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .arg("fetch")
            .current_dir(&app_path)
            .env("CARGO_HOME", &home_path)
            .env("CARGO_TARGET_DIR", &target_path)
            .env("CARGO_NET_RETRY", "5")
            .output()
            .unwrap()
    });
    let mut waited = 0;
    while upstream.count_matching("/dl/") < 3 && waited < 400 {
        std::thread::sleep(Duration::from_millis(25));
        waited += 1;
    }
    let fetched_at_kill = upstream.count_matching("/dl/");
    first.kill();
    let output = fetch.join().unwrap();
    assert!(
        output.status.success(),
        "cargo fetch failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let total = upstream.count_matching("/dl/");
    assert!(
        fetched_at_kill >= 3 && fetched_at_kill < total,
        "the kill was not mid-fetch ({fetched_at_kill} of {total})"
    );
    let locked = lockfile(app.path());
    let packages = locked.matches("source = \"registry+").count();
    // Every locked crate landed in the shared bucket, whichever node fetched it.
    upstream.switches.delay_ms.store(0, Ordering::SeqCst);
    let objects = futures_executor(garage.objects());
    assert_eq!(
        objects.len(),
        packages,
        "objects in the bucket vs locked packages"
    );

    // A fresh CARGO_HOME with one mirror down: resolves to the same lockfile and fetches.
    let fresh_home = CargoHome::new(&index_url);
    let fresh = project(&graph_project_manifest());
    fresh_home.run_ok(fresh.path(), target.path(), &["generate-lockfile"]);
    assert_eq!(lockfile(fresh.path()), locked);
    run_ok(&fresh_home, fresh.path(), target.path(), &["fetch"]);
    drop(nginx);
}

/// An upstream outage makes every node answer 503 for what it has not
/// cached. Those answers must not mark the nodes down: cached files keep
/// being served through nginx all along.
#[test]
fn an_upstream_outage_does_not_take_the_nodes_out_of_the_balancer() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let first = Mirror::builder(&upstream.url).start();
    let second = Mirror::builder(&upstream.url).start();
    let nginx = start_nginx([port_of(&first.url), port_of(&second.url)]);
    let get = |path: &str| -> u16 {
        futures_executor(async {
            support::client()
                .get(format!("{}/index/{path}", nginx.url))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    // Cached on both nodes (nginx alternates between them).
    for _ in 0..4 {
        assert_eq!(get("3/a/abc"), 200);
    }
    upstream.switches.fail_status.store(503, Ordering::SeqCst);
    // More refusals than max_fails on each node, within fail_timeout.
    for n in 0..8 {
        let status = get(&format!("un/ca/uncached{n}"));
        assert!([502, 503].contains(&status), "uncached{n}: {status}");
    }
    for _ in 0..4 {
        assert_eq!(
            get("3/a/abc"),
            200,
            "a cached file failed during the outage"
        );
    }
    drop(nginx);
}

fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
