//! The container image's build stage compiles from exactly what its
//! Dockerfile copies: the stage's `COPY` lines are read, those paths (and no
//! others) copied into an empty directory standing for its `WORKDIR`, and
//! the stage's `cargo build` run there as `cargo check`, offline. A new
//! workspace member or a file the compiler reads (`include_str!`) that the
//! Dockerfile does not copy fails here, without a Docker daemon.
//!
//! `cargo check` rather than the image's `cargo build --release`: a release
//! build from nothing takes many minutes on a CI machine, and what can go
//! wrong with the copied paths (cargo cannot load the workspace, a target's
//! source or an included file is missing) fails cargo's resolution or the
//! compiler's front end, which `check` runs in full. It shares this build's
//! target directory, where the dependencies are already checked (by clippy in
//! CI); `check` writes no binary, so the tests' `crate-mirror` is untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Dockerfile's first stage: its `WORKDIR`, the `(sources, destination)`
/// of each `COPY` from the build context, and the arguments of its
/// `cargo build`.
struct BuildStage {
    workdir: String,
    copies: Vec<(Vec<String>, String)>,
    cargo_build: Vec<String>,
}

fn build_stage(dockerfile: &str) -> BuildStage {
    let mut stage = BuildStage {
        workdir: "/".into(),
        copies: Vec::new(),
        cargo_build: Vec::new(),
    };
    let mut froms = 0;
    // Continuation lines joined, as Docker reads them.
    for line in dockerfile.replace("\\\n", " ").lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", ..] => {
                froms += 1;
                if froms > 1 {
                    break;
                }
            }
            ["WORKDIR", dir] => stage.workdir = dir.to_string(),
            ["COPY", args @ ..] => {
                let paths: Vec<&str> = args
                    .iter()
                    .copied()
                    .filter(|a| !a.starts_with("--"))
                    .collect();
                assert!(
                    !args.iter().any(|a| a.starts_with("--from")),
                    "the build stage copies from another stage: {line}"
                );
                let (dest, sources) = paths.split_last().expect("COPY with paths");
                assert!(!sources.is_empty(), "COPY without sources: {line}");
                stage.copies.push((
                    sources.iter().map(|s| s.to_string()).collect(),
                    dest.to_string(),
                ));
            }
            ["RUN", "cargo", "build", args @ ..] => {
                stage.cargo_build = args.iter().map(|a| a.to_string()).collect()
            }
            _ => {}
        }
    }
    stage
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
}

/// `COPY` as Docker does it, for paths relative to the context: a directory's
/// contents go into the destination; a file goes into it when it is a
/// directory (ends in `/`, or several sources), else becomes it.
fn docker_copy(context: &Path, workdir: &Path, sources: &[String], dest: &str) {
    let dest_path = workdir.join(dest);
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    for source in sources {
        let from = context.join(source);
        assert!(
            from.exists(),
            "the Dockerfile copies {source}, which does not exist"
        );
        if from.is_dir() {
            copy_tree(&from, &dest_path);
        } else if into_dir {
            copy_tree(&from, &dest_path.join(from.file_name().unwrap()));
        } else {
            copy_tree(&from, &dest_path);
        }
    }
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp lies in the target directory")
        .to_path_buf()
}

#[test]
fn the_image_build_stage_compiles_from_exactly_what_the_dockerfile_copies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("deploy/container/Dockerfile")).unwrap();
    let stage = build_stage(&dockerfile);
    assert_eq!(stage.workdir, "/src", "the build stage's WORKDIR");
    assert!(!stage.copies.is_empty(), "the build stage copies nothing");
    // What the check below stands for: the image's release binary, built
    // against the lock file (the runtime stage copies target/release/).
    for arg in ["--release", "--locked", "--bin", "crate-mirror"] {
        assert!(
            stage.cargo_build.iter().any(|a| a == arg),
            "the build stage's cargo build lacks {arg}: {:?}",
            stage.cargo_build
        );
    }
    assert!(dockerfile.contains("/src/target/release/crate-mirror"));

    let workdir = tempfile::tempdir().unwrap();
    for (sources, dest) in &stage.copies {
        docker_copy(root, workdir.path(), sources, dest);
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Loading the workspace is what a missing member breaks first. Resolved
    // for this platform only: packages only other platforms use are not in
    // the offline cache.
    let rustc = support::run_ok(Command::new("rustc").arg("-vV"), String::new);
    let host = rustc
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    support::run_ok(
        Command::new(&cargo)
            .args(["metadata", "--locked", "--offline", "--format-version=1"])
            .args(["--filter-platform", host])
            .current_dir(workdir.path()),
        || "cargo cannot load the workspace from the Dockerfile's copies".into(),
    );
    let args: Vec<&String> = stage
        .cargo_build
        .iter()
        .filter(|a| *a != "--release")
        .collect();
    support::run_ok(
        Command::new(&cargo)
            .arg("check")
            .args(args)
            .arg("--offline")
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(workdir.path()),
        || "the build stage's sources do not compile".into(),
    );
}

/// The image ships the release profile's binary without debug info; the
/// `profiling` profile is the same build with line tables, for `perf`.
#[test]
fn the_release_profile_strips_debug_info_and_profiling_keeps_it() {
    let manifest: toml::Table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let profiles = &manifest["profile"];
    let release = &profiles["release"];
    assert!(
        matches!(
            release.get("strip").and_then(|s| s.as_str()),
            Some("debuginfo" | "symbols")
        ) || release.get("strip").and_then(|s| s.as_bool()) == Some(true),
        "the release profile does not strip: {release:?}"
    );
    assert!(
        matches!(
            release.get("debug"),
            None | Some(toml::Value::Boolean(false))
        ),
        "the release profile asks for debug info: {release:?}"
    );
    let profiling = &profiles["profiling"];
    assert_eq!(profiling["inherits"].as_str(), Some("release"));
    assert_eq!(profiling["strip"].as_bool(), Some(false));
    assert!(
        matches!(
            profiling["debug"].as_str(),
            Some("line-tables-only" | "full")
        ) || profiling["debug"].as_bool() == Some(true),
        "the profiling profile has no debug info: {profiling:?}"
    );
}
