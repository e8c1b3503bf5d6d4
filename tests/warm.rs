//! `crate-mirror warm` as a user runs it: nothing to do or a manifest instead of
//! a lockfile is a usage error; a mirror that is down stops it after a few
//! failed connections; an https mirror with a private CA (`--cacert`) and a
//! private mirror (`--token` or `CRATE_MIRROR_TOKEN`) can be warmed; progress
//! in a log is a few lines, not a carriage return per file; `--crate NAME`
//! fetches the newest release's `.crate` too.

use std::path::Path;
use std::process::{Command, Output};

use support::cargo::new_token;
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::tls::make_certificates;
use support::upstream::{DlStyle, TestUpstream};

fn warm(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
        .arg("warm")
        .args(args)
        .env_remove("CRATE_MIRROR_TOKEN")
        .env_remove("SSL_CERT_FILE")
        .envs(env.iter().copied())
        .output()
        .expect("run crate-mirror warm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A Cargo.lock naming `count` registry packages `pkgNNN 1.0.0`.
fn lockfile(dir: &Path, count: usize) -> String {
    let mut lock = String::from("version = 4\n");
    for n in 0..count {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"pkg{n:03}\"\nversion = \"1.0.0\"\nsource = \"sparse+http://registry.example.com/index/\"\n"
        ));
    }
    let path = dir.join("Cargo.lock");
    std::fs::write(&path, lock).unwrap();
    path.to_string_lossy().into_owned()
}

fn specs(count: usize) -> Vec<CrateSpec> {
    (0..count)
        .map(|n| CrateSpec::new(&format!("pkg{n:03}"), "1.0.0"))
        .collect()
}

#[test]
fn nothing_to_warm_or_a_manifest_is_a_usage_error() {
    let none = warm(&["--mirror", "http://127.0.0.1:9"], &[]);
    assert_eq!(none.status.code(), Some(2));
    let stderr = text(&none.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nothing to warm"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("Cargo.toml");
    std::fs::write(
        &manifest,
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n[dependencies]\nserde = \"1\"\n",
    )
    .unwrap();
    let wrong = warm(
        &[
            "--mirror",
            "http://127.0.0.1:9",
            "--lockfile",
            manifest.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(wrong.status.code(), Some(2));
    let stderr = text(&wrong.stderr);
    assert!(stderr.contains("is a manifest, not a lockfile"), "{stderr}");
}

#[test]
fn a_mirror_that_is_down_stops_it_after_a_few_failed_connections() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lockfile(dir.path(), 300);
    // Nothing listens on the discard port.
    let down = warm(
        &[
            "--mirror",
            "http://127.0.0.1:9",
            "--lockfile",
            &lock,
            "--jobs",
            "2",
        ],
        &[],
    );
    assert_eq!(down.status.code(), Some(1));
    let stderr = text(&down.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");
    let stdout = text(&down.stdout);
    assert!(
        stdout.lines().count() < 10,
        "a line per file for a mirror that is down:\n{stdout}"
    );
}

#[test]
fn progress_in_a_log_is_a_line_per_tenth_and_the_newest_crate_is_fetched_by_name() {
    let mut all = specs(40);
    all.push(CrateSpec::new("named", "1.0.0"));
    all.push(CrateSpec::new("named", "1.2.0"));
    all.push(CrateSpec::new("named", "2.0.0-beta.1"));
    let upstream = TestUpstream::start(&all, DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--prefetch", "off"])
        .start();
    let dir = tempfile::tempdir().unwrap();
    let lock = lockfile(dir.path(), 40);
    let output = warm(
        &[
            "--mirror",
            &mirror.url,
            "--lockfile",
            &lock,
            "--crate",
            "named",
        ],
        &[],
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Stderr is not a terminal here: no carriage returns, at most ten lines.
    assert!(!stderr.contains('\r'), "{stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        (1..=10).contains(&lines.len()) && lines.iter().all(|l| l.starts_with("warm: ")),
        "{stderr}"
    );
    assert!(lines.last().unwrap().ends_with("(100%)"), "{stderr}");
    // 41 index files and 41 crates: the newest release of `named` (not the
    // prerelease) besides the 40 locked ones.
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("fetched 82, already cached 0, failed 0"),
        "{stdout}"
    );
    assert_eq!(mirror.stored_files("named-1.2.0.crate").len(), 1);
    assert!(mirror.stored_files("named-2.0.0").is_empty());
}

#[test]
fn a_private_mirror_is_warmed_with_a_token_from_the_flag_or_the_environment() {
    let (token, hash) = new_token();
    let upstream = TestUpstream::start(&specs(3), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).private(&hash).start();
    let dir = tempfile::tempdir().unwrap();
    let lock = lockfile(dir.path(), 3);
    let base = ["--mirror", mirror.url.as_str(), "--lockfile", lock.as_str()];

    let refused = warm(&base, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stdout).contains("401"),
        "{}",
        text(&refused.stdout)
    );

    let mut with_flag = base.to_vec();
    with_flag.extend(["--token", token.as_str()]);
    let flagged = warm(&with_flag, &[]);
    assert!(flagged.status.success(), "{}", text(&flagged.stdout));
    assert!(text(&flagged.stdout).contains("fetched 6, already cached 0, failed 0"));

    let from_env = warm(&base, &[("CRATE_MIRROR_TOKEN", token.as_str())]);
    assert!(from_env.status.success(), "{}", text(&from_env.stdout));
    assert!(text(&from_env.stdout).contains("fetched 0, already cached 6, failed 0"));
}

#[test]
fn an_https_mirror_with_a_private_ca_is_trusted_with_cacert() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let ca = certs.path().join("ca.pem");
    let upstream = TestUpstream::start(&specs(2), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).tls(certs.path()).start();
    assert!(mirror.url.starts_with("https://"), "{}", mirror.url);
    let dir = tempfile::tempdir().unwrap();
    let lock = lockfile(dir.path(), 2);
    let base = ["--mirror", mirror.url.as_str(), "--lockfile", lock.as_str()];

    let untrusted = warm(&base, &[]);
    assert!(!untrusted.status.success());
    let mut trusted_args = base.to_vec();
    trusted_args.extend(["--cacert", ca.to_str().unwrap()]);
    let trusted = warm(&trusted_args, &[]);
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert!(text(&trusted.stdout).contains("failed 0"));
    // SSL_CERT_FILE is honoured as well.
    let by_env = warm(&base, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    assert!(by_env.status.success(), "{}", text(&by_env.stderr));
}
