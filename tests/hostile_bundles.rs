//! Hostile bundles on import: a bundle may not rewrite what a site already
//! has (an existing version's index line changes only in `yanked`), may not
//! hold a version twice, may not bomb the importing process with entries that
//! decompress hugely, and an import killed half way leaves nothing behind for
//! good. Bundles are written by hand here (a manifest and entries, as `export`
//! writes them) so each one is exactly as hostile as the test needs; the real
//! `crate-mirror import` reads them and a real `serve --offline` shows what
//! was stored.

use std::io::{Cursor, Read};
use std::path::Path;
use std::process::Output;

use sha2::{Digest, Sha256};
use support::mirror::Mirror;

/// How an entry's bytes are made: called once to hash them for the manifest
/// and once to write them, so large entries are never held whole here.
type Maker = Box<dyn Fn() -> Box<dyn Read>>;

fn bytes(body: Vec<u8>) -> Maker {
    Box::new(move || Box::new(Cursor::new(body.clone())))
}

fn zeros(len: u64) -> Maker {
    Box::new(move || Box::new(std::io::repeat(0).take(len)))
}

/// The index prefix of a (lowercase) name, as the sparse index spells it.
fn prefix(name: &str) -> String {
    match name.len() {
        1 => "1".into(),
        2 => "2".into(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    }
}

fn index_path(name: &str) -> String {
    format!("index/{}/{name}", prefix(name))
}

fn crate_path(name: &str, vers: &str) -> String {
    format!("crates/{}/{name}/{name}-{vers}.crate", prefix(name))
}

fn sha256_of(maker: &Maker) -> (u64, String) {
    let mut reader = maker();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    (size, hex::encode(hasher.finalize()))
}

fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// One index line, as the upstream writes them.
fn line(name: &str, vers: &str, cksum: &str, deps: &str, yanked: bool) -> String {
    format!(
        r#"{{"name":"{name}","vers":"{vers}","deps":[{deps}],"cksum":"{cksum}","features":{{}},"yanked":{yanked}}}"#
    )
}

fn file_of(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// A bundle at `out`: the manifest (every entry's size and sha256, `crates`
/// as (name, version, path) with the path's sha256 as cksum) and then the
/// entries in the order given.
fn write_bundle(out: &Path, entries: &[(String, Maker)], crates: &[(&str, &str)]) {
    let mut files = serde_json::Map::new();
    for (path, maker) in entries {
        let (size, sha256) = sha256_of(maker);
        files.insert(
            path.clone(),
            serde_json::json!({ "size": size, "sha256": sha256 }),
        );
    }
    let crates: Vec<serde_json::Value> = crates
        .iter()
        .map(|(name, vers)| {
            let path = crate_path(name, vers);
            let cksum = files[&path]["sha256"].clone();
            serde_json::json!({ "name": name, "vers": vers, "cksum": cksum, "path": path })
        })
        .collect();
    let manifest = serde_json::json!({
        "format": "crate-mirror-bundle/1",
        "created": "Mon, 07 Dec 2026 12:00:00 GMT",
        "source": "http://127.0.0.1:1/index/",
        "pruned": true,
        "files": files,
        "crates": crates,
    });
    let manifest = serde_json::to_vec_pretty(&manifest).unwrap();
    // Fast compression: the bombs are large, and how well they compress is
    // not what is tested.
    let gzip = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(out).unwrap()),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gzip);
    let append = |tar: &mut tar::Builder<_>, path: &str, size: u64, data: Box<dyn Read>| {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, data).unwrap();
    };
    append(
        &mut tar,
        "manifest.json",
        manifest.len() as u64,
        Box::new(Cursor::new(manifest.clone())),
    );
    for (path, maker) in entries {
        let size = files[path]["size"].as_u64().unwrap();
        append(&mut tar, path, size, maker());
    }
    tar.into_inner().unwrap().finish().unwrap();
}

fn import(bundle: &Path, data: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "import",
        support::utf8(bundle),
        "--data-dir",
        support::utf8(data),
    ];
    args.extend_from_slice(extra);
    support::mirror::run(&args, &[])
}

fn import_ok(bundle: &Path, data: &Path) -> String {
    let output = import(bundle, data, &[]);
    support::assert_success(&output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The import was refused (exit code 1, "nothing was imported"); its stderr.
fn refused(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "the import must be refused: stdout {} stderr {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    stderr
}

fn offline(data: &Path) -> Mirror {
    Mirror::builder("")
        .data_dir(data)
        .args(&["--offline", "true"])
        .start()
}

/// What an offline mirror on `data` serves at `paths`: (status, body) each.
async fn served(data: &Path, paths: &[String]) -> Vec<(u16, Vec<u8>)> {
    let mirror = offline(data);
    let mut out = Vec::new();
    for p in paths {
        let response = mirror.get(p).await;
        let status = response.status().as_u16();
        out.push((status, response.bytes().await.unwrap().to_vec()));
    }
    out
}

/// The site every finding-3 case starts from: `serde` 1.0.0 and 1.1.0 with
/// their crates, imported from a bundle.
struct Site {
    one: Vec<u8>,
    one_one: Vec<u8>,
}

impl Site {
    fn new() -> Self {
        Site {
            one: b"serde 1.0.0, the published bytes".to_vec(),
            one_one: b"serde 1.1.0, the published bytes".to_vec(),
        }
    }

    fn lines(&self) -> Vec<String> {
        vec![
            line("serde", "1.0.0", &sha256_hex(&self.one), "", false),
            line("serde", "1.1.0", &sha256_hex(&self.one_one), "", false),
        ]
    }

    fn import_into(&self, work: &Path, data: &Path) {
        let bundle = work.join("site.tar.gz");
        write_bundle(
            &bundle,
            &[
                (index_path("serde"), bytes(file_of(&self.lines()))),
                (crate_path("serde", "1.0.0"), bytes(self.one.clone())),
                (crate_path("serde", "1.1.0"), bytes(self.one_one.clone())),
            ],
            &[("serde", "1.0.0"), ("serde", "1.1.0")],
        );
        let said = import_ok(&bundle, data);
        assert!(said.contains("and 2 crates"), "{said}");
    }

    /// What the site serves for serde: the index file and both crates.
    fn paths() -> Vec<String> {
        vec![
            "/index/se/rd/serde".into(),
            "/api/v1/crates/serde/1.0.0/download".into(),
            "/api/v1/crates/serde/1.1.0/download".into(),
            "/api/v1/crates/serde/1.2.0/download".into(),
        ]
    }
}

#[tokio::test]
async fn an_import_never_changes_an_existing_version() {
    let work = tempfile::tempdir().unwrap();
    let site = Site::new();
    let data = work.path().join("data");
    site.import_into(work.path(), &data);
    let before = served(&data, &Site::paths()).await;
    assert_eq!(before[0], (200, file_of(&site.lines())));
    assert_eq!(before[2], (200, site.one_one.clone()));
    assert_eq!(before[3].0, 404);
    let new_version = b"serde 1.2.0, a new version".to_vec();
    let new_line = line("serde", "1.2.0", &sha256_hex(&new_version), "", false);

    // An index-only bundle that changes 1.1.0's cksum (and brings 1.2.0): the
    // stored crate keeps its bytes, so cargo would fail its checksum.
    let other = "ab".repeat(32);
    let bundle = work.path().join("cksum.tar.gz");
    write_bundle(
        &bundle,
        &[(
            index_path("serde"),
            bytes(file_of(&[
                site.lines()[0].clone(),
                line("serde", "1.1.0", &other, "", false),
                new_line.clone(),
            ])),
        )],
        &[],
    );
    let stderr = refused(import(&bundle, &data, &[]));
    assert!(
        stderr.contains("serde 1.1.0") && stderr.contains("cksum"),
        "names the crate, the version and what differs: {stderr}"
    );

    // New bytes for 1.0.0 and a new dependency in its line, with 1.2.0.
    let evil = b"serde 1.0.0, other bytes".to_vec();
    let dep = r#"{"name":"evil","req":"^1","features":[],"optional":false,"default_features":true,"target":null,"kind":"normal"}"#;
    let bundle = work.path().join("rewrite.tar.gz");
    write_bundle(
        &bundle,
        &[
            (
                index_path("serde"),
                bytes(file_of(&[
                    line("serde", "1.0.0", &sha256_hex(&evil), dep, false),
                    site.lines()[1].clone(),
                    new_line.clone(),
                ])),
            ),
            (crate_path("serde", "1.0.0"), bytes(evil.clone())),
            (crate_path("serde", "1.2.0"), bytes(new_version.clone())),
        ],
        &[("serde", "1.0.0"), ("serde", "1.2.0")],
    );
    let stderr = refused(import(&bundle, &data, &[]));
    assert!(stderr.contains("serde 1.0.0"), "{stderr}");
    assert!(stderr.contains("deps"), "{stderr}");

    // The same line with only a new dependency (the cksum kept).
    let bundle = work.path().join("deps.tar.gz");
    write_bundle(
        &bundle,
        &[(
            index_path("serde"),
            bytes(file_of(&[line(
                "serde",
                "1.0.0",
                &sha256_hex(&site.one),
                dep,
                false,
            )])),
        )],
        &[],
    );
    let stderr = refused(import(&bundle, &data, &[]));
    assert!(stderr.contains("serde 1.0.0"), "{stderr}");

    // Nothing of any of them is visible: the same index file, the same
    // crates, no 1.2.0.
    assert_eq!(served(&data, &Site::paths()).await, before);

    // A yank is the one change a later bundle may bring, with a new version.
    let bundle = work.path().join("yank.tar.gz");
    write_bundle(
        &bundle,
        &[
            (
                index_path("serde"),
                bytes(file_of(&[
                    site.lines()[0].clone(),
                    line("serde", "1.1.0", &sha256_hex(&site.one_one), "", true),
                    new_line.clone(),
                ])),
            ),
            (crate_path("serde", "1.2.0"), bytes(new_version.clone())),
        ],
        &[("serde", "1.2.0")],
    );
    let said = import_ok(&bundle, &data);
    assert!(said.contains("(1 new versions) and 1 crates"), "{said}");
    let after = served(&data, &Site::paths()).await;
    let index = String::from_utf8(after[0].1.clone()).unwrap();
    assert_eq!(
        index,
        String::from_utf8(file_of(&[
            site.lines()[0].clone(),
            line("serde", "1.1.0", &sha256_hex(&site.one_one), "", true),
            new_line,
        ]))
        .unwrap()
    );
    assert_eq!(after[1], before[1]);
    assert_eq!(after[2], before[2]);
    assert_eq!(after[3], (200, new_version));
}

#[tokio::test]
async fn a_version_twice_in_a_bundle_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let good = b"dup 1.0.0, the bytes the first line vouches for".to_vec();
    let bundle = work.path().join("twice.tar.gz");
    write_bundle(
        &bundle,
        &[
            (
                index_path("dupe"),
                bytes(file_of(&[
                    line("dupe", "1.0.0", &sha256_hex(&good), "", false),
                    line("dupe", "1.0.0", &"cd".repeat(32), "", false),
                ])),
            ),
            (crate_path("dupe", "1.0.0"), bytes(good)),
        ],
        &[("dupe", "1.0.0")],
    );
    let data = work.path().join("data");
    let stderr = refused(import(&bundle, &data, &[]));
    assert!(
        stderr.contains(&index_path("dupe")) && stderr.contains("1.0.0 twice"),
        "{stderr}"
    );
    assert!(support::files_under(&data.join("crates")).is_empty());
    let shown = served(&data, &["/index/du/pe/dupe".to_string()]).await;
    assert_eq!(shown[0].0, 404);
}

#[tokio::test]
async fn a_stored_crate_is_existing_even_without_its_index_line() {
    // A crate stored with no index line naming it (what an import killed
    // between storing crates and writing index files leaves, or an index
    // file the upstream dropped): a bundle's line for that version must
    // vouch for the stored bytes.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let stored = b"orphan 1.0.0, the stored bytes".to_vec();
    let key = data.join(crate_path("orphan", "1.0.0"));
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, &stored).unwrap();

    let bundle = work.path().join("orphan.tar.gz");
    write_bundle(
        &bundle,
        &[(
            index_path("orphan"),
            bytes(file_of(&[line(
                "orphan",
                "1.0.0",
                &"ef".repeat(32),
                "",
                false,
            )])),
        )],
        &[],
    );
    let stderr = refused(import(&bundle, &data, &[]));
    assert!(stderr.contains("orphan 1.0.0"), "{stderr}");
    let shown = served(&data, &["/index/or/ph/orphan".to_string()]).await;
    assert_eq!(shown[0].0, 404);

    // The line that vouches for it imports.
    let bundle = work.path().join("vouched.tar.gz");
    let good = line("orphan", "1.0.0", &sha256_hex(&stored), "", false);
    write_bundle(
        &bundle,
        &[(
            index_path("orphan"),
            bytes(file_of(std::slice::from_ref(&good))),
        )],
        &[],
    );
    import_ok(&bundle, &data);
    let shown = served(
        &data,
        &[
            "/index/or/ph/orphan".to_string(),
            "/api/v1/crates/orphan/1.0.0/download".to_string(),
        ],
    )
    .await;
    assert_eq!(shown, [(200, file_of(&[good])), (200, stored)]);
}

#[tokio::test]
async fn a_crate_over_the_size_limit_is_refused_and_not_stored() {
    // 1 MiB over the default limit (64 MiB), all zeros: a bundle of well
    // under a megabyte.
    let work = tempfile::tempdir().unwrap();
    let size = (64 << 20) + (1 << 20);
    let big = zeros(size);
    let (_, cksum) = sha256_of(&big);
    let bundle = work.path().join("big.tar.gz");
    write_bundle(
        &bundle,
        &[
            (
                index_path("huge"),
                bytes(file_of(&[line("huge", "1.0.0", &cksum, "", false)])),
            ),
            (crate_path("huge", "1.0.0"), big),
        ],
        &[("huge", "1.0.0")],
    );
    assert!(std::fs::metadata(&bundle).unwrap().len() < 1 << 20);
    let data = work.path().join("data");
    let stderr = refused(import(&bundle, &data, &[]));
    assert!(
        stderr.contains(&crate_path("huge", "1.0.0")) && stderr.contains("import-max-crate-size"),
        "names the entry and the setting: {stderr}"
    );
    assert!(support::files_under(&data.join("crates")).is_empty());
    assert!(
        support::files_under(&data.join("tmp")).is_empty(),
        "nothing staged is left"
    );

    // The limit is a setting: raised, the same bundle imports.
    let output = import(&bundle, &data, &["--import-max-crate-size", "128MiB"]);
    support::assert_success(&output);
    assert_eq!(support::files_under(&data.join("crates")).len(), 1);
}

#[tokio::test]
async fn a_bundle_over_the_total_limit_is_refused_before_anything_is_staged() {
    let work = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    let mut crates = Vec::new();
    let mut lines = Vec::new();
    let versions = ["1.0.0", "1.0.1", "1.0.2"];
    for vers in versions {
        let body = zeros(4 << 20);
        let (_, cksum) = sha256_of(&body);
        lines.push(line("many", vers, &cksum, "", false));
        entries.push((crate_path("many", vers), body));
        crates.push(("many", vers));
    }
    entries.insert(0, (index_path("many"), bytes(file_of(&lines))));
    let bundle = work.path().join("many.tar.gz");
    write_bundle(&bundle, &entries, &crates);
    let data = work.path().join("data");
    let stderr = refused(import(
        &bundle,
        &data,
        &["--import-max-bundle-size", "10MiB"],
    ));
    assert!(stderr.contains("import-max-bundle-size"), "{stderr}");
    assert!(support::files_under(&data.join("crates")).is_empty());
    assert!(support::files_under(&data.join("tmp")).is_empty());
    // Under the default, it imports.
    let said = import_ok(&bundle, &data);
    assert!(said.contains("and 3 crates"), "{said}");
}

/// Peak RSS in KiB of `crate-mirror ARGS`, as GNU time measures it (the
/// kernel's `ru_maxrss` of the process), and its output.
fn peak_rss_kib(args: &[&str], work: &Path) -> (u64, Output) {
    let report = work.join("time.txt");
    let output = std::process::Command::new("/usr/bin/time")
        .args(["-o", support::utf8(&report), "-f", "%M"])
        .arg(support::mirror::bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run crate-mirror under /usr/bin/time");
    let text = std::fs::read_to_string(&report).unwrap();
    let kib = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no figure from time: {text}"));
    (kib, output)
}

#[tokio::test]
async fn index_files_are_streamed_not_held_and_a_refused_bomb_stores_nothing() {
    // Sixteen index files of about 30 MiB each (every one under the 32 MiB
    // a single file may have), each line a distinct version, then a crate
    // that no index line vouches for: the bundle is refused at its end,
    // after every index file was read.
    const FILES: usize = 16;
    const LINES: usize = 200_000;
    let work = tempfile::tempdir().unwrap();
    let cksum = "0".repeat(64);
    let mut entries: Vec<(String, Maker)> = Vec::new();
    for file in 0..FILES {
        let name = format!("bomb{file:02}");
        let cksum = cksum.clone();
        let made = name.clone();
        entries.push((
            index_path(&name),
            Box::new(move || {
                let mut body = Vec::with_capacity(LINES * 160);
                for i in 0..LINES {
                    let vers = format!("0.{}.{}", i / 1000, i % 1000);
                    body.extend_from_slice(line(&made, &vers, &cksum, "", false).as_bytes());
                    body.push(b'\n');
                }
                Box::new(Cursor::new(body))
            }),
        ));
    }
    let loose = b"not in any index line".to_vec();
    entries.push((crate_path("bomb00", "9.9.9"), bytes(loose)));
    let bundle = work.path().join("bomb.tar.gz");
    write_bundle(&bundle, &entries, &[("bomb00", "9.9.9")]);
    let data = work.path().join("data");
    let (kib, output) = peak_rss_kib(
        &[
            "import",
            support::utf8(&bundle),
            "--data-dir",
            support::utf8(&data),
        ],
        work.path(),
    );
    eprintln!(
        "bundle {} bytes, peak RSS {kib} KiB",
        std::fs::metadata(&bundle).unwrap().len()
    );
    let stderr = refused(output);
    assert!(stderr.contains("lists no version 9.9.9"), "{stderr}");
    // All of it is about 480 MiB; streamed, the import holds a line at a
    // time and the versions of one file (a few MiB).
    assert!(
        kib < 192 * 1024,
        "peak RSS {kib} KiB: index files were held in memory"
    );
    assert!(support::files_under(&data.join("crates")).is_empty());
    assert!(support::files_under(&data.join("tmp")).is_empty());
    let shown = served(&data, &["/index/bo/mb/bomb00".to_string()]).await;
    assert_eq!(shown[0].0, 404);
}

/// A PID that no process has now: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[tokio::test]
async fn an_import_killed_half_way_leaves_nothing_for_good() {
    let work = tempfile::tempdir().unwrap();
    // A bundle whose one crate takes a while to stage: 48 MiB of zeros.
    let big = zeros(48 << 20);
    let (_, cksum) = sha256_of(&big);
    let bundle = work.path().join("slow.tar.gz");
    write_bundle(
        &bundle,
        &[
            (
                index_path("slow"),
                bytes(file_of(&[line("slow", "1.0.0", &cksum, "", false)])),
            ),
            (crate_path("slow", "1.0.0"), big),
        ],
        &[("slow", "1.0.0")],
    );
    let data = work.path().join("data");
    let tmp = data.join("tmp");
    let mut child = std::process::Command::new(support::mirror::bin())
        .args([
            "import",
            support::utf8(&bundle),
            "--data-dir",
            support::utf8(&data),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let staging = tmp.join(format!("import-{}", child.id()));
    // Killed as soon as it stages anything (or, on a fast machine, after it
    // finished: then there is nothing to show, and the test says so).
    let guard = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while support::files_under(&staging).is_empty() && std::time::Instant::now() < guard {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait().unwrap();
    assert!(
        staging.is_dir(),
        "the kill came after the import ended; nothing to check"
    );

    // Another import's dir whose process is gone, and one whose process is
    // alive (this test's own): only the first is removed, by `import` ...
    let stale = tmp.join(format!("import-{}", dead_pid()));
    let live = tmp.join(format!("import-{}", std::process::id()));
    for dir in [&stale, &live] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("0.crate"), b"left over").unwrap();
    }
    let small = work.path().join("small.tar.gz");
    let body = b"small 1.0.0".to_vec();
    write_bundle(
        &small,
        &[
            (
                index_path("small"),
                bytes(file_of(&[line(
                    "small",
                    "1.0.0",
                    &sha256_hex(&body),
                    "",
                    false,
                )])),
            ),
            (crate_path("small", "1.0.0"), bytes(body)),
        ],
        &[("small", "1.0.0")],
    );
    import_ok(&small, &data);
    assert!(!staging.exists(), "the killed import's dir is removed");
    assert!(!stale.exists(), "a gone process's dir is removed");
    assert!(live.join("0.crate").exists(), "a live process's dir stays");

    // ... and by `serve`.
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("0.crate"), b"left over").unwrap();
    let mirror = offline(&data);
    assert_eq!(
        mirror
            .get("/api/v1/crates/small/1.0.0/download")
            .await
            .status(),
        200
    );
    assert!(!stale.exists(), "serve removes a gone process's dir");
    assert!(live.join("0.crate").exists(), "a live process's dir stays");
}

#[tokio::test]
async fn long_entry_paths_import_and_a_huge_long_name_is_refused_unread() {
    // A name of 64 characters: its crate's path in the tar is longer than a
    // tar header holds, so it travels as a GNU long name (as `export`
    // writes it).
    let work = tempfile::tempdir().unwrap();
    let name = "a".repeat(64);
    let body = b"a long name".to_vec();
    let bundle = work.path().join("long.tar.gz");
    assert!(crate_path(&name, "1.0.0").len() > 100);
    write_bundle(
        &bundle,
        &[
            (
                index_path(&name),
                bytes(file_of(&[line(
                    &name,
                    "1.0.0",
                    &sha256_hex(&body),
                    "",
                    false,
                )])),
            ),
            (crate_path(&name, "1.0.0"), bytes(body.clone())),
        ],
        &[(&name, "1.0.0")],
    );
    let data = work.path().join("data");
    let said = import_ok(&bundle, &data);
    assert!(said.contains("and 1 crates"), "{said}");
    let shown = served(&data, &[format!("/api/v1/crates/{name}/1.0.0/download")]).await;
    assert_eq!(shown, [(200, body)]);

    // A long-name entry of 512 MiB (one letter repeated: a bundle of a few
    // megabytes) after the manifest: the tar reader would read all of it
    // into memory to learn the next entry's path.
    let hostile = work.path().join("long-name.tar.gz");
    write_bundle(&hostile, &[], &[]);
    let manifest = {
        let file = std::fs::File::open(&hostile).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut first = archive.entries().unwrap().next().unwrap().unwrap();
        let mut bytes = Vec::new();
        first.read_to_end(&mut bytes).unwrap();
        bytes
    };
    let gzip = flate2::write::GzEncoder::new(
        std::fs::File::create(&hostile).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gzip);
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "manifest.json", &manifest[..])
        .unwrap();
    let mut long = tar::Header::new_gnu();
    long.set_entry_type(tar::EntryType::GNULongName);
    long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    long.set_size(512 << 20);
    long.set_mode(0o644);
    long.set_cksum();
    tar.append(&long, std::io::repeat(b'a').take(512 << 20))
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let data = work.path().join("hostile-data");
    let (kib, output) = peak_rss_kib(
        &[
            "import",
            support::utf8(&hostile),
            "--data-dir",
            support::utf8(&data),
        ],
        work.path(),
    );
    eprintln!(
        "bundle {} bytes, peak RSS {kib} KiB",
        std::fs::metadata(&hostile).unwrap().len()
    );
    assert!(
        kib < 256 * 1024,
        "peak RSS {kib} KiB: the long name was read"
    );
    let stderr = refused(output);
    assert!(stderr.len() < 4096, "a short error: {} bytes", stderr.len());
    assert!(stderr.contains("long name"), "{stderr}");
}
