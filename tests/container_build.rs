//! The container image's build stage compiles from exactly what its
//! Dockerfile copies: the stage's `COPY` lines are read, those paths (and no
//! others) copied into an empty directory standing for its `WORKDIR`, and
//! the stage's `cargo build` run there as `cargo check`, offline. A new
//! workspace member or a file the compiler reads (`include_str!`) that the
//! Dockerfile does not copy (or its ignore file keeps out of the context)
//! fails here, without a Docker daemon.
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

/// The paths `Dockerfile.dockerignore` keeps out of the build context.
fn ignored(dockerignore: &str) -> Vec<PathBuf> {
    dockerignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            assert!(
                !line.contains(['*', '?', '[', '!']),
                "this test reads plain paths only: {line}"
            );
            PathBuf::from(line.trim_matches('/'))
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path, skip: &[PathBuf]) {
    if skip.iter().any(|s| s == from) {
        return;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()), skip);
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        // The source's time, so that cargo finds a copy it checked before
        // unchanged and checks only what changed since.
        let modified = std::fs::metadata(from).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(to)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }
}

/// `COPY` as Docker does it, for paths relative to the context (less the
/// `ignored` ones): a directory's contents go into the destination; a file
/// goes into it when it is a directory (ends in `/`, or several sources),
/// else becomes it.
fn docker_copy(
    context: &Path,
    ignored: &[PathBuf],
    workdir: &Path,
    sources: &[String],
    dest: &str,
) {
    let skip: Vec<PathBuf> = ignored.iter().map(|path| context.join(path)).collect();
    let dest_path = workdir.join(dest);
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    for source in sources {
        let from = context.join(source);
        assert!(
            from.exists() && !skip.iter().any(|s| from.starts_with(s)),
            "the Dockerfile copies {source}, which is not in the build context"
        );
        if from.is_dir() {
            copy_tree(&from, &dest_path, &skip);
        } else if into_dir {
            copy_tree(&from, &dest_path.join(from.file_name().unwrap()), &skip);
        } else {
            copy_tree(&from, &dest_path, &skip);
        }
    }
}

/// `cargo` as a user runs it: without the variables cargo sets for this test
/// (build scripts that read them would otherwise rerun, and everything
/// above them be checked again, each time this test and a plain cargo
/// command take turns with the target directory).
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command
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

    // Docker reads the ignore file named after the Dockerfile beside it.
    let ignored = ignored(
        &std::fs::read_to_string(root.join("deploy/container/Dockerfile.dockerignore")).unwrap(),
    );
    assert!(
        ignored.iter().any(|path| path == Path::new("target")),
        "target/ (gigabytes) goes to the builder"
    );
    // Always the same directory: cargo names the artifacts of a path package
    // after its path, and a new one each run would pile up in target/.
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dockerfile-build-stage");
    if workdir.exists() {
        std::fs::remove_dir_all(&workdir).unwrap();
    }
    std::fs::create_dir_all(&workdir).unwrap();
    for (sources, dest) in &stage.copies {
        docker_copy(root, &ignored, &workdir, sources, dest);
    }

    // Loading the workspace is what a missing member breaks first. Resolved
    // for this platform only: packages only other platforms use are not in
    // the offline cache.
    let rustc = support::run_ok(Command::new("rustc").arg("-vV"), String::new);
    let host = rustc
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    support::run_ok(
        cargo()
            .args(["metadata", "--locked", "--offline", "--format-version=1"])
            .args(["--filter-platform", host])
            .current_dir(&workdir),
        || "cargo cannot load the workspace from the Dockerfile's copies".into(),
    );
    let args: Vec<&String> = stage
        .cargo_build
        .iter()
        .filter(|a| *a != "--release")
        .collect();
    support::run_ok(
        cargo()
            .arg("check")
            .args(args)
            .arg("--offline")
            .env("CARGO_TARGET_DIR", target_dir())
            // No incremental state kept for a package only this test checks.
            .env("CARGO_INCREMENTAL", "0")
            // The image's context holds no .git: the build script must not
            // find this checkout's above the copy either.
            .env("GIT_CEILING_DIRECTORIES", workdir.parent().unwrap())
            .current_dir(&workdir),
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
