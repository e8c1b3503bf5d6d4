//! The repository names no path of the machine it was written on: a clone
//! anywhere else must build and pass its suite, so every file the tree holds
//! is found relative to the tree (tests and benches from `CARGO_MANIFEST_DIR`).
//!
//! What counts as a machine path, in every text file git tracks (or would
//! track: untracked files not ignored count too, so a new file is caught
//! before it is committed):
//!
//! - an absolute path into a user's or a build host's own directories: the
//!   top-level directories `work`, `home`, `root` and `Users` (a home or a
//!   CI workspace, different on every machine);
//! - the sibling directory `shared` reached by a parent step (`..` then
//!   `shared`): a directory beside the clone, which a clone elsewhere lacks.
//!
//! Not flagged, as they are the same on every machine that runs the mirror
//! and the deploy files name them on purpose: the system's own directories
//! (`etc`, `usr`, `var`, `run`, `opt`, `srv`, `dev`, `proc`, `sys`), and
//! `tmp` (examples in docs of where to put a scratch build).
//!
//! A path counts only where it starts a path: at the start of a line or
//! after a character that cannot be part of one (a space, a quote, a
//! backtick, `=`, `(`, `:` …). So a URL path such as `/api/v1/work/` or a
//! relative `crates/home/` is not flagged. The patterns are assembled at run
//! time, so this file does not match itself.

use std::path::Path;
use std::process::Command;

/// Top-level directories whose absolute paths belong to one machine.
const MACHINE_DIRS: &[&str] = &["work", "home", "root", "Users"];

/// Whether `c` may be part of a path component, so that a `/` after it
/// continues a path rather than starting one.
fn continues_a_path(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '~' | '/' | '$' | '}')
}

/// The machine paths in `line` (see the module doc), as found.
fn machine_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for dir in MACHINE_DIRS {
        let pattern = format!("/{dir}/");
        for (at, _) in line.match_indices(&pattern) {
            let starts_a_path = line[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !continues_a_path(c));
            if starts_a_path {
                found.push(pattern.clone());
            }
        }
    }
    let sibling = ["..", "shared"].join("/");
    if line.contains(&sibling) {
        found.push(sibling);
    }
    found
}

/// Every file git tracks or would track in the tree at `root`.
fn repository_files(root: &Path) -> Vec<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .expect("run git (the hygiene test reads the tree through git ls-files)");
    assert!(
        output.status.success(),
        "git ls-files failed in {}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split('\0')
        .filter(|path| !path.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn no_file_names_a_path_of_one_machine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = repository_files(root);
    // This very file, the README and the sources at least: an empty list
    // would pass without having looked.
    assert!(
        files.iter().any(|f| f == "tests/repository_hygiene.rs") && files.len() > 50,
        "git ls-files listed only {} files",
        files.len()
    );
    let mut offences = Vec::new();
    for file in &files {
        let bytes = match std::fs::read(root.join(file)) {
            Ok(bytes) => bytes,
            // Deleted in the work tree, not yet in the index.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read {file}: {e}"),
        };
        // Binary files (the fixture's gzip'd tar) hold no written paths.
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            for path in machine_paths(line) {
                offences.push(format!("{file}:{}: {path}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "paths of one machine in the tree (find files relative to CARGO_MANIFEST_DIR):\n{}",
        offences.join("\n")
    );
}

/// The patterns catch what they are for and leave the system's own paths,
/// URLs and relative paths alone.
#[test]
fn machine_paths_are_told_from_system_paths() {
    let home = ["", "home", "someone", "src"].join("/");
    let work = ["", "work", "shared", "fixtures"].join("/");
    let sibling = ["..", "shared", "fixtures"].join("/");
    for line in [
        format!("PathBuf::from(\"{work}\")"),
        format!("cd {home}"),
        format!("`{sibling}`"),
        format!("PATH=/usr/bin:{home}"),
        format!("{}/x", ["", "root", ".cargo"].join("/")),
        format!("{}/x", ["", "Users", "me"].join("/")),
    ] {
        assert!(!machine_paths(&line).is_empty(), "not flagged: {line}");
    }
    for line in [
        "ExecStart=/usr/bin/crate-mirror serve",
        "EnvironmentFile=/etc/crate-mirror/env",
        "StateDirectory=/var/lib/crate-mirror",
        "--before /tmp/crate-mirror-99b14e1",
        "GET /api/v1/work/1.0.0/download",
        "crates/home/src/lib.rs",
        "https://example.com/home/index",
        "$HOME/.cargo/bin/garage",
        "${CARGO_HOME}/root/x",
    ] {
        assert!(machine_paths(line).is_empty(), "flagged: {line}");
    }
}
