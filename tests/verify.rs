//! `crate-mirror verify` where the upstream cannot be asked: an air-gapped
//! site that imported a bundle checks its crates against the index it holds
//! (offline, or with the upstream unreachable); a corrupted crate is found
//! there; and a run that could check nothing fails, saying why, instead of
//! reporting success. (Verify beside a live mirror with its upstream up is
//! `tests/storage_local.rs` and `tests/storage_s3.rs`.)

use std::path::{Path, PathBuf};
use std::process::Output;

use support::mirror::Mirror;
use support::registry::CrateSpec;

/// The crates of the site, as `name-version.crate` files.
const CRATES: [&str; 3] = ["one-1.0.0.crate", "two-2.0.0.crate", "three-3.0.0.crate"];

/// A far-side data dir in `work`: three crates exported from a mirror of a
/// test upstream, imported, and both the mirror and the upstream gone.
fn imported_site(work: &Path) -> PathBuf {
    let bundle = work.join("site.tar.gz");
    support::mirror::export_bundle(
        &[
            CrateSpec::new("one", "1.0.0"),
            CrateSpec::new("two", "2.0.0"),
            CrateSpec::new("three", "3.0.0"),
        ],
        &bundle,
    );
    let data = work.join("far");
    support::assert_success(&support::mirror::run(
        &[
            "import",
            support::utf8(&bundle),
            "--data-dir",
            support::utf8(&data),
        ],
        &[],
    ));
    data
}

/// `verify` on `data` with `settings`.
fn verify(data: &Path, settings: &[&str]) -> Output {
    let mut args = vec!["verify", "--data-dir", support::utf8(data)];
    args.extend_from_slice(settings);
    support::mirror::run(&args, &[])
}

/// Exit code, stdout and stderr, for the assertions and their messages.
fn said(output: &Output) -> (Option<i32>, String, String) {
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The stored file of `file` (one of `CRATES`) in `data`.
fn stored(data: &Path, file: &str) -> PathBuf {
    let found: Vec<_> = support::files_under(&data.join("crates"))
        .into_iter()
        .filter(|path| path.ends_with(file))
        .collect();
    assert_eq!(found.len(), 1, "{file} stored once: {found:?}");
    found.into_iter().next().unwrap()
}

/// An upstream URL on loopback where nothing listens: a port the system
/// just handed out, closed again.
fn unreachable_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/index/")
}

#[tokio::test]
async fn an_imported_site_verifies_against_its_own_index_and_finds_a_corrupted_crate() {
    let work = tempfile::tempdir().unwrap();
    let data = imported_site(work.path());

    // Offline: every crate checked against the imported index.
    let (code, stdout, stderr) = said(&verify(&data, &["--offline", "true"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "checked 3, good 3, bad 0 (removed), unverifiable 0; \
             3 checked against the data dir's index"
        ),
        "{stdout}"
    );

    // Online, with the upstream unreachable: the same, from the same copy.
    let (code, stdout, stderr) = said(&verify(&data, &["--upstream", &unreachable_upstream()]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("checked 3, good 3, bad 0 (removed), unverifiable 0; 3 checked"),
        "{stdout}"
    );

    // One byte of one crate flipped: found, removed, exit 1.
    let victim = stored(&data, CRATES[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let (code, stdout, stderr) = said(&verify(&data, &["--offline", "true"]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let key = victim.strip_prefix(&data).unwrap().to_string_lossy();
    assert!(stdout.contains(&format!("bad {key}: sha256 ")), "{stdout}");
    assert!(
        stdout.contains("checked 3, good 2, bad 1 (removed), unverifiable 0"),
        "{stdout}"
    );
    assert!(!victim.exists(), "the bad crate was left in place");
}

#[tokio::test]
async fn a_verify_that_can_check_nothing_fails_and_says_why() {
    let work = tempfile::tempdir().unwrap();
    let data = imported_site(work.path());

    // The crates without the index (a data dir whose database was deleted):
    // offline there is nothing to check them against.
    let bare = work.path().join("bare");
    for file in CRATES {
        let from = stored(&data, file);
        let to = bare.join(from.strip_prefix(&data).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    let (code, stdout, stderr) = said(&verify(&bare, &["--offline", "true"]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("checked 0, good 0, bad 0 (removed), unverifiable 3"),
        "{stdout}"
    );
    let reason = stderr
        .lines()
        .find(|line| line.contains("nothing could be checked"))
        .unwrap_or_else(|| panic!("no line says nothing was checked: {stderr}"));
    assert!(reason.contains("holds no index"), "{reason}");
    // Nothing was removed for being unverifiable.
    for file in CRATES {
        stored(&bare, file);
    }

    // Beside a running offline mirror, which holds the database's lock.
    let running = Mirror::builder("")
        .data_dir(&data)
        .args(&["--offline", "true"])
        .public_url()
        .start();
    let (code, stdout, stderr) = said(&verify(&data, &["--offline", "true"]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let reason = stderr
        .lines()
        .find(|line| line.contains("nothing could be checked"))
        .unwrap_or_else(|| panic!("no line says nothing was checked: {stderr}"));
    assert!(reason.contains("in use by another process"), "{reason}");
    drop(running);
}
