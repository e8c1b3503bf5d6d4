//! Drives the real `cargo` binary with a temporary CARGO_HOME whose config
//! replaces the default registry with a given sparse index.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary CARGO_HOME pointing at `index_url` (a `.../index/` URL).
pub struct CargoHome {
    pub dir: tempfile::TempDir,
}

impl CargoHome {
    pub fn new(index_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("cargo home");
        let config = format!(
            "[source.crates-io]\nreplace-with = \"mirror\"\n\n[source.mirror]\nregistry = \"sparse+{index_url}\"\n\n[net]\nretry = 1\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config.toml");
        CargoHome { dir }
    }

    /// A CARGO_HOME whose replacement registry is a git index (no `sparse+`),
    /// fetched by libgit2 or, with `fetch_with_cli`, by the git command.
    pub fn git(git_url: &str, fetch_with_cli: bool) -> Self {
        let dir = tempfile::tempdir().expect("cargo home");
        let config = format!(
            "[source.crates-io]\nreplace-with = \"mirror\"\n\n[source.mirror]\nregistry = \"{git_url}\"\n\n[net]\nretry = 1\ngit-fetch-with-cli = {fetch_with_cli}\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config.toml");
        CargoHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `run_ok` with this home: `CargoHome::new(url).run_ok(..)` reads as one line.
    pub fn run_ok(&self, project: &Path, target_dir: &Path, args: &[&str]) -> String {
        run_ok(self, project, target_dir, args)
    }
}

/// A project directory with `manifest` and an empty binary.
pub fn project(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("project dir");
    std::fs::write(dir.path().join("Cargo.toml"), manifest).expect("manifest");
    std::fs::create_dir_all(dir.path().join("src")).expect("src");
    std::fs::write(dir.path().join("src/main.rs"), "fn main() {}\n").expect("main.rs");
    dir
}

/// The cargo running the tests (`CARGO`), else the one on the PATH.
pub fn cargo_binary() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Runs `cargo ARGS` in `project` with `home` as CARGO_HOME.
pub fn run(home: &CargoHome, project: &Path, target_dir: &Path, args: &[&str]) -> Output {
    run_with_env(home, project, target_dir, args, &[])
}

/// Runs cargo and panics with its output unless it succeeded.
pub fn run_ok(home: &CargoHome, project: &Path, target_dir: &Path, args: &[&str]) -> String {
    let output = run(home, project, target_dir, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "cargo {args:?} failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

impl CargoHome {
    /// A CARGO_HOME whose config.toml is exactly `config`.
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("cargo home");
        std::fs::write(dir.path().join("config.toml"), config).expect("write config.toml");
        CargoHome { dir }
    }
}

/// Runs `cargo ARGS` like `run`, with extra environment variables (a token, or
/// a HOME whose git configuration holds credentials).
pub fn run_with_env(
    home: &CargoHome,
    project: &Path,
    target_dir: &Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Output {
    Command::new(cargo_binary())
        .args(args)
        .current_dir(project)
        .env("CARGO_HOME", home.path())
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .env("CARGO_HTTP_TIMEOUT", "30")
        .env_remove("CARGO_REGISTRIES_CRATES_IO_PROTOCOL")
        .env_remove("RUSTC_WRAPPER")
        .envs(env.iter().copied())
        .output()
        .expect("run cargo")
}

/// A new client token (what cargo presents through `cargo:token`) and its
/// hash (what the mirror is configured with), from `crate-mirror token`.
pub fn new_token() -> (String, String) {
    let output = Command::new(crate::mirror::bin())
        .arg("token")
        .output()
        .expect("crate-mirror token");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (field("token:"), field("hash:"))
}
