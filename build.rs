//! Names the commit the binary is built from, for `crate-mirror --version`:
//! sets `BUILD_COMMIT` to `abc1234 2026-12-07` (the short hash of
//! HEAD and its commit date, `abc1234-dirty` when tracked files differ from
//! it), or to `unknown` when there is no git checkout to ask: a source
//! tarball, the container build (whose context copies no `.git`), a machine
//! without git. Every version of the data dir so far is 0.1.0, so the commit
//! is what tells two builds apart; asking git must never fail the build.
//!
//! The build script runs again when HEAD moves (`.git/HEAD`, the branch ref
//! it points to, `packed-refs`), not on every build: so `-dirty` says how the
//! tree was when HEAD last moved. Watching git's index as well would keep it
//! current, but every `git status` touches the index and would then rebuild
//! the crate.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = describe(&manifest_dir).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BUILD_COMMIT={commit}");
}

/// `git` run in `dir`: its trimmed stdout when it succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_string())
}

/// The commit of the checkout at `dir`, if `dir` is the top of one (a
/// tarball unpacked inside some other repository must not take its commit).
fn describe(dir: &Path) -> Option<String> {
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    watch_head(dir);
    let hash = git(dir, &["rev-parse", "--short=7", "HEAD"])?;
    let date = git(dir, &["log", "-1", "--format=%cd", "--date=short", "HEAD"])?;
    // Tracked files only: a build leaves untracked files (target/) around.
    // `--no-optional-locks`: status would otherwise rewrite the index.
    let dirty = !git(
        dir,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )?
    .is_empty();
    let suffix = if dirty { "-dirty" } else { "" };
    Some(format!("{hash}{suffix} {date}"))
}

/// Tells cargo which git files move with HEAD. In a worktree `.git` is a
/// file; git says where HEAD, the index and the shared refs live.
fn watch_head(dir: &Path) {
    // Only files that exist: cargo runs the script on every build while a
    // watched file is missing (a packed branch has no file of its own).
    let path = |args: &[&str]| git(dir, args).map(|p| dir.join(p)).filter(|p| p.is_file());
    if let Some(head) = path(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={}", head.display());
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        if let Some(reference) = path(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={}", reference.display());
        }
    }
    if let Some(packed) = path(&["rev-parse", "--git-path", "packed-refs"]) {
        println!("cargo:rerun-if-changed={}", packed.display());
    }
}
