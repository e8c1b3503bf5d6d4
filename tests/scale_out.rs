//! Scale-out: two mirrors on one S3 bucket behind Debian's nginx with the shipped
//! configuration. A cargo fetch completes while one mirror is killed in the
//! middle of it, and a fresh CARGO_HOME resolves and fetches with that mirror
//! down.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::cargo::{project, run_ok, CargoHome};
use common::mirror::Mirror;
use common::registry::{graph_project_manifest, graph_registry};
use common::s3::Garage;
use common::upstream::{DlStyle, TestUpstream};

const S3: [&str; 2] = ["--storage", "s3://crates"];

struct Nginx {
    child: Child,
    url: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// Runs nginx with deploy/nginx/nginx.conf, changing only the three ports.
fn start_nginx(prefix: &Path, backends: [u16; 2]) -> Nginx {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/nginx.conf"),
    )
    .unwrap();
    let config = shipped
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{listen}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", backends[0]))
        .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", backends[1]));
    assert_ne!(config, shipped);
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config).unwrap();
    let mut child = Command::new("nginx")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off; error_log stderr warn;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (Debian's nginx package, installed by .ci/run)");
    let url = format!("http://127.0.0.1:{listen}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok() {
            return Nginx { child, url };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nginx did not start");
}

fn lockfile(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("Cargo.lock")).unwrap()
}

#[test]
fn two_mirrors_behind_nginx_survive_losing_one_mid_fetch() {
    let garage = Garage::start();
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mut first = Mirror::start_with_env(&upstream.url, &S3, &garage.env());
    let second = Mirror::start_with_env(&upstream.url, &S3, &garage.env());
    let prefix = tempfile::tempdir().unwrap();
    let nginx = start_nginx(prefix.path(), [port_of(&first.url), port_of(&second.url)]);
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
    run_ok(
        &fresh_home,
        fresh.path(),
        target.path(),
        &["generate-lockfile"],
    );
    assert_eq!(lockfile(fresh.path()), locked);
    run_ok(&fresh_home, fresh.path(), target.path(), &["fetch"]);
    drop(nginx);
}

fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
