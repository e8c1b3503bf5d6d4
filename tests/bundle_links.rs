//! Hostile bundles: entries named `../x` or with an absolute path, symbolic
//! links and hard links, listed in the manifest or not, in place of a real
//! entry or beside them. `import` refuses each, names the entry, imports
//! nothing, and nothing lands outside the data dir (nor inside it).

use std::path::{Path, PathBuf};

use support::registry::CrateSpec;

/// A real bundle of two crates, exported from a mirror of a test upstream.
fn good_bundle(work: &Path) -> PathBuf {
    let bundle = work.join("good.tar.gz");
    support::mirror::export_bundle(
        &[
            CrateSpec::new("one", "1.0.0"),
            CrateSpec::new("two", "2.0.0"),
        ],
        &bundle,
    );
    bundle
}

/// One entry of a rewritten bundle.
struct Entry {
    name: Vec<u8>,
    kind: tar::EntryType,
    link: Option<Vec<u8>>,
    data: Vec<u8>,
}

fn entries_of(bundle: &Path) -> Vec<Entry> {
    let file = std::fs::File::open(bundle).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|item| {
            let mut item = item.unwrap();
            let name = item.path_bytes().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut item, &mut data).unwrap();
            Entry {
                name,
                kind: tar::EntryType::Regular,
                link: None,
                data,
            }
        })
        .collect()
}

/// Writes `entries` as a gzip'd tar, names and link targets byte for byte
/// (the tar crate's own setters refuse `..` and absolute paths, as they should).
fn write_bundle(out: &Path, entries: &[Entry]) {
    let gzip = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::default(),
    );
    let mut builder = tar::Builder::new(gzip);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            assert!(entry.name.len() < gnu.name.len());
            gnu.name[..entry.name.len()].copy_from_slice(&entry.name);
            if let Some(link) = &entry.link {
                gnu.linkname[..link.len()].copy_from_slice(link);
            }
        }
        header.set_entry_type(entry.kind);
        header.set_mode(0o644);
        header.set_size(entry.data.len() as u64);
        header.set_cksum();
        builder.append(&header, &entry.data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// The manifest (the first entry) with `change` applied to its JSON.
fn with_manifest(entries: &mut [Entry], change: impl Fn(&mut serde_json::Value)) {
    let mut manifest: serde_json::Value = serde_json::from_slice(&entries[0].data).unwrap();
    change(&mut manifest);
    entries[0].data = serde_json::to_vec_pretty(&manifest).unwrap();
}

/// Lists `name` in the manifest's files with `data`'s size and sha256.
fn list(manifest: &mut serde_json::Value, name: &str, data: &[u8]) {
    use sha2::Digest;
    manifest["files"][name] = serde_json::json!({
        "size": data.len(),
        "sha256": hex::encode(sha2::Sha256::digest(data)),
    });
}

#[test]
fn traversal_absolute_paths_and_links_in_a_bundle_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let bundle = good_bundle(work.path());
    let good = entries_of(&bundle);
    assert_eq!(
        String::from_utf8_lossy(&good[0].name),
        "manifest.json",
        "the manifest comes first"
    );
    let index_one = good
        .iter()
        .position(|e| e.name.ends_with(b"/one") && e.name.starts_with(b"index/"))
        .expect("one's index entry");
    let crate_two = good
        .iter()
        .position(|e| {
            !e.name.starts_with(b"index/")
                && e.name != b"manifest.json"
                && e.name.windows(3).any(|w| w == b"two")
        })
        .expect("two's crate entry");
    // Where escaping entries would land, relative to the data dir.
    let outside = work.path().join("escaped");
    let absolute = outside.to_string_lossy().into_owned();
    let secret = work.path().join("secret");
    std::fs::write(&secret, "not for the mirror").unwrap();

    type Case = (&'static str, Box<dyn Fn(&mut Vec<Entry>)>);
    let payload = b"escaped\n".to_vec();
    let p = payload.clone();
    let abs = absolute.clone();
    let secret_path = secret.to_string_lossy().into_owned();
    let s1 = secret_path.clone();
    let s2 = secret_path.clone();
    let cases: Vec<Case> = vec![
        (
            "`../escaped`, listed",
            Box::new(move |e| {
                let name = "../escaped";
                with_manifest(e, |m| list(m, name, &p));
                e.insert(
                    1,
                    Entry {
                        name: name.into(),
                        kind: tar::EntryType::Regular,
                        link: None,
                        data: p.clone(),
                    },
                );
            }),
        ),
        (
            "`../../escaped`, not listed",
            Box::new(|e| {
                e.insert(
                    1,
                    Entry {
                        name: b"../../escaped".to_vec(),
                        kind: tar::EntryType::Regular,
                        link: None,
                        data: b"escaped\n".to_vec(),
                    },
                );
            }),
        ),
        (
            "`index/../../escaped`, listed",
            Box::new(|e| {
                let name = "index/../../escaped";
                let data = b"escaped\n".to_vec();
                with_manifest(e, |m| list(m, name, &data));
                e.insert(
                    1,
                    Entry {
                        name: name.into(),
                        kind: tar::EntryType::Regular,
                        link: None,
                        data: data.clone(),
                    },
                );
            }),
        ),
        (
            "an absolute path, listed",
            Box::new(move |e| {
                let data = b"escaped\n".to_vec();
                with_manifest(e, |m| list(m, &abs, &data));
                e.insert(
                    1,
                    Entry {
                        name: abs.clone().into_bytes(),
                        kind: tar::EntryType::Regular,
                        link: None,
                        data,
                    },
                );
            }),
        ),
        (
            "a symlink in place of an index file",
            Box::new(move |e| {
                e[index_one].kind = tar::EntryType::Symlink;
                e[index_one].link = Some(s1.clone().into_bytes());
                e[index_one].data.clear();
            }),
        ),
        (
            "a relative symlink escaping, in place of a crate",
            Box::new(move |e| {
                e[crate_two].kind = tar::EntryType::Symlink;
                e[crate_two].link = Some(b"../../../../secret".to_vec());
                e[crate_two].data.clear();
            }),
        ),
        (
            "a hard link in place of a crate",
            Box::new(move |e| {
                e[crate_two].kind = tar::EntryType::Link;
                e[crate_two].link = Some(s2.clone().into_bytes());
                e[crate_two].data.clear();
            }),
        ),
        (
            "a hard link to another entry",
            Box::new(move |e| {
                let target = e[index_one].name.clone();
                e[crate_two].kind = tar::EntryType::Link;
                e[crate_two].link = Some(target);
                e[crate_two].data.clear();
            }),
        ),
        (
            "a symlinked directory before the files below it",
            Box::new(|e| {
                e.insert(
                    1,
                    Entry {
                        name: b"index/3".to_vec(),
                        kind: tar::EntryType::Symlink,
                        link: Some(b"../../escaped-dir".to_vec()),
                        data: Vec::new(),
                    },
                );
            }),
        ),
    ];
    let expected = [
        "../escaped is neither an index file nor a listed crate",
        "entry ../../escaped is not listed in the manifest",
        "bad path index/../../escaped",
        "escaped is neither an index file nor a listed crate",
        "entry index/3/o/one is damaged: not a regular file",
        "crate is damaged: not a regular file",
        "crate is damaged: not a regular file",
        "crate is damaged: not a regular file",
        "entry index/3 is not listed in the manifest",
    ];
    assert_eq!(expected.len(), cases.len());
    for (i, (what, change)) in cases.iter().enumerate() {
        let mut entries = entries_of(&bundle);
        change(&mut entries);
        let hostile = work.path().join(format!("hostile-{i}.tar.gz"));
        write_bundle(&hostile, &entries);
        let data = work.path().join(format!("data-{i}"));
        let output = support::mirror::run(
            &[
                "import",
                support::utf8(&hostile),
                "--data-dir",
                support::utf8(&data),
            ],
            &[],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains("nothing was imported"), "{what}: {stderr}");
        // Refused for what the entry is, not by accident.
        assert!(stderr.contains(expected[i]), "{what}: {stderr}");
        // Nothing escaped: no file beside the data dir or above it, no link
        // anywhere in it, no crate stored.
        assert!(!outside.exists(), "{what}: wrote {}", outside.display());
        assert!(!work.path().join("escaped-dir").exists(), "{what}");
        assert!(
            !work.path().parent().unwrap().join("escaped").exists(),
            "{what}"
        );
        for file in support::files_under(&data) {
            let meta = std::fs::symlink_metadata(&file).unwrap();
            assert!(
                !meta.file_type().is_symlink(),
                "{what}: a link {}",
                file.display()
            );
            assert!(
                !file.to_string_lossy().ends_with(".crate"),
                "{what}: stored {}",
                file.display()
            );
        }
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "not for the mirror",
            "{what}"
        );
    }
    // The untouched bundle, rewritten by the same code, imports: the
    // refusals above are the hostile entries'.
    let same = work.path().join("same.tar.gz");
    write_bundle(&same, &entries_of(&bundle));
    let data = work.path().join("data-good");
    let output = support::mirror::run(
        &[
            "import",
            support::utf8(&same),
            "--data-dir",
            support::utf8(&data),
        ],
        &[],
    );
    support::assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("and 2 crates"));
}
