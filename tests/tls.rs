//! Native TLS: real cargo over `sparse+https` URLs with a test CA resolves and
//! fetches, and the mirror's access log shows it used HTTP/2 (ALPN).

use std::process::Command;

use support::cargo::{project, CargoHome};
use support::mirror::Mirror;
use support::registry::{graph_project_manifest, graph_registry};
use support::tls::make_certificates;
use support::upstream::{DlStyle, TestUpstream};

#[test]
fn cargo_over_https_with_a_test_ca_uses_http2() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).tls(certs.path()).start();
    assert!(mirror.url.starts_with("https://"), "{}", mirror.url);

    let home = CargoHome::new(&mirror.index_url());
    let app = project(&graph_project_manifest());
    let target = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca.pem");
    let cargo = |args: &[&str]| {
        support::run_ok(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(args)
                .current_dir(app.path())
                .env("CARGO_HOME", home.path())
                .env("CARGO_TARGET_DIR", target.path())
                .env("CARGO_HTTP_CAINFO", &ca),
            String::new,
        );
    };
    cargo(&["generate-lockfile"]);
    cargo(&["fetch"]);
    assert!(upstream.count_matching("/dl/") >= 20);

    let log = mirror.log();
    let http2_index = log
        .lines()
        .filter(|l| l.contains("path=/index/") && l.contains("version=HTTP/2.0"))
        .count();
    let http1 = log
        .lines()
        .filter(|l| l.contains("version=HTTP/1.1"))
        .count();
    assert!(
        http2_index >= 20,
        "cargo did not use HTTP/2: {http2_index} HTTP/2 index requests\n{log}"
    );
    assert_eq!(http1, 0, "some requests fell back to HTTP/1.1");

    // Without the CA, cargo refuses the mirror's certificate.
    let untrusting = CargoHome::new(&mirror.index_url());
    let other = project(&graph_project_manifest());
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("generate-lockfile")
        .current_dir(other.path())
        .env("CARGO_HOME", untrusting.path())
        .env("CARGO_TARGET_DIR", target.path())
        .env_remove("CARGO_HTTP_CAINFO")
        .output()
        .unwrap();
    assert!(!output.status.success());
}
