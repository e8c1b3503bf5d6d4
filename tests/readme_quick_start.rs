//! The README's quick start, run as written: its `sh` blocks are read out of
//! README.md and given to bash (the install step excepted: the test build's
//! binary is put on the `PATH` instead, and `UPSTREAM` is the test upstream),
//! then real cargo resolves through the mirror with the README's own
//! `config.toml`. If the README's commands stop working, this fails.
//!
//! The quick start's address, the default `127.0.0.1:8080`, is the one a
//! reader's own mirror holds while the tests run (step 3 leaves it running):
//! the commands run as written with that address changed to a free port, the
//! start command through `CRATE_MIRROR_LISTEN`, and the test holds 8080 busy
//! meanwhile to show it never needs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use support::cargo::{project, run_ok, CargoHome};
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

const README: &str = include_str!("../README.md");

/// The text of the README section headed `heading`, up to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = README
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has a section `{heading}`"));
    let body = &README[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    &body[..end]
}

/// The fenced blocks of `lang` in `text`, each as its lines (the list's
/// indentation removed).
fn blocks(text: &str, lang: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match current.as_mut() {
            None if trimmed == format!("```{lang}") => current = Some(Vec::new()),
            Some(_) if trimmed == "```" => found.extend(current.take()),
            Some(lines) => lines.push(trimmed.to_string()),
            None => {}
        }
    }
    found
}

/// The mirror as the quick start started it; killed when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address the quick start's commands name.
const QUICK_START_ADDRESS: &str = "127.0.0.1:8080";

/// `lines` with the quick start's address changed to `address`; each block
/// must name it, so that nothing reaches the reader's own mirror.
fn readdressed(lines: &[String], address: &str) -> Vec<String> {
    assert!(
        lines.iter().any(|line| line.contains(QUICK_START_ADDRESS)),
        "the block names {QUICK_START_ADDRESS}: {lines:?}"
    );
    lines
        .iter()
        .map(|line| line.replace(QUICK_START_ADDRESS, address))
        .collect()
}

fn bash(line: &str, cwd: &Path, path: &str, upstream: &str, address: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("PATH", path)
        .env("UPSTREAM", upstream)
        .env("CRATE_MIRROR_LISTEN", address)
        .env("RUST_LOG", "info");
    command
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let quick = section("Quick start on one machine");
    let sh = blocks(quick, "sh");
    let [install, choose, start, check] = &sh[..] else {
        panic!("the quick start has four sh blocks (install, choose, start, check): {sh:?}");
    };
    assert_eq!(install, &["cargo install --path . --locked"]);
    assert!(
        choose.len() == 1 && choose[0].starts_with("export UPSTREAM="),
        "{choose:?}"
    );
    // The start command is the README's first command, the same text.
    let two = blocks(section("The two commands"), "sh");
    assert_eq!(
        &two[0], start,
        "the quick start starts the mirror as `The two commands` does"
    );

    // 127.0.0.1:8080 held busy for the whole run, as a mirror the reader
    // started by hand would hold it (if it cannot be bound, something else
    // holds it already).
    let _busy = std::net::TcpListener::bind(QUICK_START_ADDRESS).ok();
    let address = format!("127.0.0.1:{}", support::free_port());

    let upstream = TestUpstream::start(&[CrateSpec::new("serde", "1.0.0")], DlStyle::Plain);
    let work = tempfile::tempdir().expect("a working directory");
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(support::mirror::bin(), bin.join("crate-mirror"))
        .expect("put crate-mirror on the PATH");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let [start_line] = &start[..] else {
        panic!("one start command: {start:?}");
    };
    let mut child = bash(
        &format!("exec {start_line}"),
        work.path(),
        &path,
        &upstream.url,
        &address,
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run the start command");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let mirror = Started(child);
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let first = BufReader::new(stdout).lines().next();
    let Some(Ok(first)) = first else {
        drop(mirror);
        panic!(
            "the mirror did not start on {address}: {}",
            log.join().unwrap_or_default().join("\n")
        );
    };
    assert_eq!(first, format!("crate-mirror listening on http://{address}"));
    assert!(
        work.path().join("data").is_dir(),
        "data kept in ./data, as the README says"
    );

    // Step 4, each command as written.
    let outputs: Vec<String> = readdressed(check, &address)
        .iter()
        .map(|line| {
            let output = bash(line, work.path(), &path, &upstream.url, &address)
                .output()
                .expect("run a check command");
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .collect();
    let [config, first_fetch, second_fetch] = &outputs[..] else {
        panic!("three check commands: {check:?}");
    };
    let config: serde_json::Value =
        serde_json::from_str(config).unwrap_or_else(|e| panic!("config.json: {e}: {config}"));
    assert_eq!(config["dl"], format!("http://{address}/api/v1/crates"));
    assert_eq!(first_fetch.trim().to_ascii_lowercase(), "x-cache: miss");
    assert_eq!(second_fetch.trim().to_ascii_lowercase(), "x-cache: hit");

    // The dashboard the step points at.
    let dashboard = Command::new("curl")
        .args(["-s", "-f", &format!("http://{address}/")])
        .output()
        .expect("curl the dashboard");
    assert!(dashboard.status.success(), "the dashboard answers");
    let html = String::from_utf8_lossy(&dashboard.stdout);
    assert!(html.contains("<html"), "{html}");

    // Step 5: cargo with the README's configuration, as written.
    let toml = blocks(section("Pointing cargo at the mirror"), "toml");
    let [config_toml] = &toml[..] else {
        panic!("one toml block: {toml:?}");
    };
    let home = CargoHome::with_config(&readdressed(config_toml, &address).join("\n"));
    let app = project(
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nserde = \"1\"\n",
    );
    let target = tempfile::tempdir().expect("target dir");
    run_ok(&home, app.path(), target.path(), &["fetch"]);
    let lock = std::fs::read_to_string(app.path().join("Cargo.lock")).expect("Cargo.lock");
    assert!(lock.contains("name = \"serde\""), "{lock}");
    drop(mirror);
    let log = log.join().unwrap_or_default();
    assert!(
        log.iter().any(|l| l.contains("crate-mirror started")),
        "the start line: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("/api/v1/crates/serde/1.0.0/download")),
        "cargo fetched serde's .crate through the mirror"
    );
}
