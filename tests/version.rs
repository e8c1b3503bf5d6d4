//! `crate-mirror --version` names the commit the binary was built from, so
//! two builds of the same version (every one so far is 0.1.0) can be told
//! apart when a data dir is upgraded or a bug is reported.

use std::process::Command;

/// The short hash of this checkout's HEAD, as build.rs asks for it; `None`
/// outside a git checkout.
fn head() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn version_names_the_commit_of_head() {
    let output = Command::new(support::mirror::bin())
        .arg("--version")
        .output()
        .expect("run crate-mirror --version");
    assert!(output.status.success(), "{output:?}");
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let prefix = format!("crate-mirror {} (", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&prefix), "{version}");
    match head() {
        // `abc1234 2026-12-07)` or `abc1234-dirty 2026-12-07)`.
        Some(hash) => {
            let commit = &version[prefix.len()..];
            assert!(
                commit.starts_with(&format!("{hash} "))
                    || commit.starts_with(&format!("{hash}-dirty ")),
                "{version} names HEAD, {hash}"
            );
            let date = commit.split(' ').nth(1).unwrap_or_default();
            assert!(
                date.len() == 11 && date.ends_with(')') && date.as_bytes()[4] == b'-',
                "{version}: a commit date"
            );
        }
        None => assert_eq!(version, format!("{prefix}unknown)")),
    }
}
