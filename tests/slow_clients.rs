//! Slow clients keep their connection: real cargo frozen for 15 s in the
//! middle of a warm `cargo fetch` (as when it unpacks a large crate on a slow
//! disk), with `net.retry = 0`, still succeeds over plain http (h2c) and over
//! https (HTTP/2 by ALPN); and the `keep-alive` setting is what decides how
//! long an idle connection is kept.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cargo::{cargo_binary, project, CargoHome};
use support::mirror::Mirror;
use support::registry::layered_graph;
use support::tls::make_certificates;
use support::upstream::{DlStyle, TestUpstream};

/// How long cargo is frozen: three times the old keep-alive (5 s), which was
/// also the HTTP/2 PING deadline.
const FREEZE: Duration = Duration::from_secs(15);

fn cargo(home: &Path, project: &Path, target: &Path, ca: Option<&Path>, args: &[&str]) -> Child {
    let mut command = Command::new(cargo_binary());
    command
        .args(args)
        .current_dir(project)
        .env("CARGO_HOME", home)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_HTTP_TIMEOUT", "60")
        .env_remove("CARGO_REGISTRIES_CRATES_IO_PROTOCOL")
        .env_remove("RUSTC_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ca) = ca {
        command.env("CARGO_HTTP_CAINFO", ca);
    }
    command.spawn().expect("run cargo")
}

fn finished_ok(child: Child, what: &str) {
    let output = child.wait_with_output().expect("cargo output");
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Downloads in the mirror's access log (each logged once its response ends).
fn downloads_logged(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("crate_mirror::access") && l.contains("/download"))
        .count()
}

/// Files cargo has written below `registry/{kind}` of its home: `index`
/// (cached index files) or `cache` (downloaded `.crate` files).
fn registry_files(home: &Path, kind: &str) -> usize {
    let dir = home.join("registry").join(kind);
    if !dir.exists() {
        return 0;
    }
    support::files_below(&dir).len()
}

/// A warm mirror (a first `cargo fetch` filled it), then a second cargo with
/// an empty CARGO_HOME and `net.retry = 0` frozen once it has some index
/// files, for `FREEZE`, then let go: it must finish.
fn frozen_fetch_succeeds(tls: bool) {
    let certs = tempfile::tempdir().unwrap();
    let (specs, manifest) = layered_graph(12, 4);
    // 48 crates of 512 KiB (the versions cargo picks): more than the socket
    // buffers hold, so downloads are still under way while cargo is frozen.
    let specs: Vec<_> = specs
        .into_iter()
        .map(|s| {
            if s.vers == "1.0.0" {
                s
            } else {
                s.padding(512 << 10)
            }
        })
        .collect();
    let upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let mut builder = Mirror::builder(&upstream.url);
    let ca = if tls {
        make_certificates(certs.path());
        builder = builder.tls(certs.path());
        Some(certs.path().join("ca.pem"))
    } else {
        None
    };
    let mirror = builder.start();
    let app = project(&manifest);
    let target = tempfile::tempdir().unwrap();
    let warm = CargoHome::new(&mirror.index_url());
    let ca = ca.as_deref();
    finished_ok(
        cargo(
            warm.path(),
            app.path(),
            target.path(),
            ca,
            &["generate-lockfile"],
        ),
        "cargo generate-lockfile",
    );
    finished_ok(
        cargo(warm.path(), app.path(), target.path(), ca, &["fetch"]),
        "warming cargo fetch",
    );

    let index_url = mirror.index_url();
    let home = CargoHome::with_config(&format!(
        "[source.crates-io]\nreplace-with = \"mirror\"\n\n[source.mirror]\nregistry = \"sparse+{index_url}\"\n\n[net]\nretry = 0\n"
    ));
    let crates = registry_files(warm.path(), "cache");
    let answered_downloads = || downloads_logged(&mirror.log());
    let warm_downloads = answered_downloads();
    let mut child = cargo(home.path(), app.path(), target.path(), ca, &["fetch"]);
    // Frozen once the mirror has sent a first download whole: the others'
    // bodies are on the way.
    let guard = Instant::now() + Duration::from_secs(60);
    while answered_downloads() == warm_downloads {
        assert!(
            Instant::now() < guard,
            "cargo started no download within 60 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "cargo ended early");
        std::thread::sleep(Duration::from_micros(500));
    }
    signal(child.id(), "-STOP");
    let at_freeze = registry_files(home.path(), "cache");
    // A stopped child is not reaped: `Some` here means it had already ended,
    // and the freeze would show nothing.
    assert!(
        child.try_wait().unwrap().is_none() && at_freeze < crates,
        "cargo finished before it could be frozen ({at_freeze} of {crates} crates)"
    );
    std::thread::sleep(FREEZE);
    signal(child.id(), "-CONT");
    finished_ok(child, "the frozen cargo fetch");
    assert_eq!(registry_files(home.path(), "cache"), crates);
}

#[test]
fn cargo_frozen_for_15_s_mid_fetch_over_h2c_succeeds() {
    frozen_fetch_succeeds(false);
}

#[test]
fn cargo_frozen_for_15_s_mid_fetch_over_https_succeeds() {
    frozen_fetch_succeeds(true);
}

/// A raw HTTP/1.1 connection to `mirror` that has sent one keep-alive
/// `GET /health`; its answer is left for the caller to read.
async fn health_over_keep_alive(mirror: &Mirror) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = mirror.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    tcp
}

#[tokio::test]
async fn the_keep_alive_setting_closes_idle_connections() {
    use tokio::io::AsyncReadExt;
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--keep-alive", "1"])
        .start();
    let mut tcp = health_over_keep_alive(&mirror).await;
    // The answer, then the close of the idle connection (a 30 s guard).
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "an idle connection was kept past the guard with keep-alive 1"
    );
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let settings = mirror.get("/api/settings").await.text().await.unwrap();
    assert!(settings.contains("keep-alive"), "{settings}");
}

/// A patient keep-alive must not make a stop wait for idle clients: on
/// SIGTERM an idle HTTP/1.1 keep-alive connection is closed at once, so the
/// mirror exits while the client still holds it, well before either the
/// keep-alive or the shutdown timeout (both 120 s here) would have ended it.
#[tokio::test]
async fn a_stop_does_not_wait_for_idle_keep_alive_connections() {
    use tokio::io::AsyncReadExt;
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let mut mirror = Mirror::builder(&upstream.url)
        .args(&["--keep-alive", "120", "--shutdown-timeout", "120"])
        .start();
    let mut tcp = health_over_keep_alive(&mirror).await;
    let mut answer = [0u8; 12];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // The connection is idle and kept; the stop begins.
    mirror.terminate();
    let exited = mirror.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some(),
        "the mirror still runs 30 s after SIGTERM: the idle connection held the stop"
    );
    drop(tcp);
}
