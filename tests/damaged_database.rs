//! A damaged database does not keep the cache from serving: everything in it
//! can be fetched again. A truncated sled file (a full disk, a bad restore)
//! is moved aside, kept for inspection, and a fresh database is opened; index
//! files are fetched again from the upstream and crates are served from
//! storage, which is counted again from the files. Garbled pages that sled
//! still opens lose records, and each record lost is said in the log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::cargo::{project, CargoHome};
use support::mirror::Mirror;
use support::registry::layered_graph;
use support::upstream::{DlStyle, TestUpstream};

/// The files of the sled dir of a data dir (`conf`, `db`, any snapshots).
fn sled_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("sled"))
        .expect("the sled dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no sled files in {}", data.display());
    files
}

/// The dirs the damaged database was moved to.
fn damaged_dirs(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data)
        .expect("the data dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("sled.damaged-"))
        })
        .collect()
}

/// Index requests the upstream saw (config.json aside).
fn index_requests(upstream: &TestUpstream) -> usize {
    upstream.count_matching("/index/") - upstream.count("/index/config.json")
}

/// A cache filled by `cargo fetch` of a layered graph, then stopped (its
/// database flushed). Returns the upstream, the data dir's temp parent, the
/// data dir, the manifest and the crates' names.
fn filled_cache() -> (
    TestUpstream,
    tempfile::TempDir,
    PathBuf,
    String,
    Vec<String>,
) {
    let (specs, manifest) = layered_graph(3, 6);
    let mut names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    names.dedup();
    let upstream = TestUpstream::start(&specs, DlStyle::Plain);
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mirror = Mirror::builder(&upstream.url).data_dir(&data).start();
    let app = project(&manifest);
    let target = tempfile::tempdir().unwrap();
    CargoHome::new(&mirror.index_url()).run_ok(app.path(), target.path(), &["fetch"]);
    assert!(!mirror.stored_files(".crate").is_empty());
    mirror.stop();
    (upstream, temp, data, manifest, names)
}

fn crate_files(data: &Path) -> usize {
    let mut found = 0;
    let mut stack = vec![data.join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "crate") {
                found += 1;
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_database_is_moved_aside_and_the_cache_rebuilt() {
    let (upstream, _temp, data, manifest, _) = filled_cache();
    let stored = crate_files(&data);
    let (index_before, downloads_before) =
        (index_requests(&upstream), upstream.count_matching("/dl/"));
    assert!(downloads_before > 0 && index_before > 0);

    // A full disk or a bad restore: every file of sled cut to half.
    let mut cut = Vec::new();
    for file in sled_files(&data) {
        let len = std::fs::metadata(&file).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len / 2).unwrap();
        cut.push((file.file_name().unwrap().to_os_string(), len / 2));
    }

    let mirror = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .try_start()
        .unwrap_or_else(|log| panic!("the mirror did not start on a truncated database: {log}"));

    // The damaged database is kept, as it was, for inspection.
    let damaged = damaged_dirs(&data);
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    for (name, len) in &cut {
        let kept = damaged[0].join(name);
        assert_eq!(
            std::fs::metadata(&kept).map(|m| m.len()).ok(),
            Some(*len),
            "{} kept as it was",
            kept.display()
        );
    }
    // One log line says what happened and where the old database is.
    let log = mirror.log();
    let said: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("damaged") && line.contains("database"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(
        said[0].contains(&*damaged[0].to_string_lossy()),
        "the line names where the damaged copy is: {}",
        said[0]
    );
    assert!(
        said[0].contains("WARN") || said[0].contains("ERROR"),
        "{}",
        said[0]
    );

    // /ready says so, and the node is ready: it can serve.
    let ready = mirror.get("/ready").await;
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["database"]["rebuilt_at_start"], true, "{ready}");
    assert_eq!(
        ready["database"]["damaged_copy"],
        damaged[0].to_string_lossy().as_ref(),
        "{ready}"
    );

    // Crates are counted again from the files in storage.
    let mut objects = None;
    for _ in 0..200 {
        objects = mirror.stats().await["storage"]["objects"].as_u64();
        if objects == Some(stored as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        objects,
        Some(stored as u64),
        "the storage count was rebuilt"
    );

    // Cargo resolves and fetches through it, on a new CARGO_HOME: the index
    // files come from the upstream again, the crates from storage.
    let app = project(&manifest);
    let target = tempfile::tempdir().unwrap();
    CargoHome::new(&mirror.index_url()).run_ok(app.path(), target.path(), &["fetch"]);
    assert!(
        index_requests(&upstream) > index_before,
        "the index files were fetched again"
    );
    assert_eq!(
        upstream.count_matching("/dl/"),
        downloads_before,
        "no crate was downloaded again"
    );
    assert_eq!(crate_files(&data), stored);
}

/// The sparse index path of crate `name` (4 characters or more).
fn index_path(name: &str) -> String {
    format!("/index/{}/{}/{name}", &name[..2], &name[2..4])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_pages_lose_records_and_each_is_logged() {
    let (upstream, _temp, data, manifest, names) = filled_cache();
    let downloads_before = upstream.count_matching("/dl/");
    // The index files the first run cached (the root does not use every crate).
    let cached: Vec<String> = names
        .into_iter()
        .filter(|name| upstream.count(&index_path(name)) > 0)
        .collect();

    // 64 bytes of every 4 KiB page of sled's data file garbled, the mirror
    // down. sled opens it, dropping what it cannot read.
    let db = data.join("sled").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let mut at = 2048;
    while at + 64 <= bytes.len() {
        for byte in &mut bytes[at..at + 64] {
            *byte ^= 0x5a;
        }
        at += 4096;
    }
    std::fs::write(&db, &bytes).unwrap();

    // Without prefetch, so that an index file answered MISS was asked for
    // by this test and not fetched ahead of it.
    let mirror = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .args(&["--prefetch", "off"])
        .try_start()
        .unwrap_or_else(|log| panic!("the mirror did not start on a garbled database: {log}"));
    let ready = mirror.get("/ready").await;
    assert_eq!(ready.status(), 200);

    // Every cached index file is served; those the database lost are
    // fetched again, and each of those, and only those, is named in a
    // warning.
    let mut lost = Vec::new();
    for name in &cached {
        let response = mirror.get(&index_path(name)).await;
        assert_eq!(response.status(), 200, "{name}");
        if response.headers()["x-cache"] != "HIT" {
            lost.push(name.clone());
        }
    }
    assert!(
        !lost.is_empty(),
        "the garbling lost nothing: the test shows nothing"
    );
    let log = mirror.log();
    for name in &cached {
        let named: Vec<&str> = log
            .lines()
            .filter(|line| {
                line.contains("WARN")
                    && line.contains("lost")
                    && line.contains(&format!("krate={name}"))
            })
            .collect();
        let expected = usize::from(lost.contains(name));
        assert_eq!(named.len(), expected, "{name} (lost: {lost:?}):\n{log}");
    }
    let metrics = mirror.metrics().await;
    let counted: f64 = ["missing", "undecodable", "unreadable"]
        .iter()
        .map(|reason| {
            metrics
                .get(&format!(
                    "crate_mirror_index_records_lost_total{{reason=\"{reason}\"}}"
                ))
                .copied()
                .unwrap_or_default()
        })
        .sum();
    assert_eq!(counted, lost.len() as f64, "{metrics:?}");

    // Cargo resolves and fetches through it; no crate is downloaded again.
    let app = project(&manifest);
    let target = tempfile::tempdir().unwrap();
    CargoHome::new(&mirror.index_url()).run_ok(app.path(), target.path(), &["fetch"]);
    assert_eq!(upstream.count_matching("/dl/"), downloads_before);
}

/// A record sled reads back fine but that is not one of ours (damage sled's
/// checksums did not catch, or a bad write) is logged with its crate,
/// counted, and fetched again: not an error on every lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_is_logged_counted_and_fetched_again() {
    let (upstream, _temp, data, _manifest, _) = filled_cache();
    let name = "layer0-crate000";
    {
        let dir = crate_mirror::data_dir::DataDir::open(&data, Duration::ZERO)
            .await
            .unwrap();
        let index = dir.db().open_tree("index").unwrap();
        assert!(index.contains_key(name).unwrap(), "{name} was cached");
        index
            .insert(name, &b"\xff\xff\xff\x7fnot a record"[..])
            .unwrap();
        dir.flush().unwrap();
    }
    let fetched_before = upstream.count(&index_path(name));

    let mirror = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .args(&["--prefetch", "off"])
        .start();
    for _ in 0..2 {
        let response = mirror.get(&index_path(name)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            upstream.index_body(name).unwrap()
        );
    }
    assert_eq!(
        upstream.count(&index_path(name)),
        fetched_before + 1,
        "fetched again, once"
    );
    let log = mirror.log();
    let named: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains(&format!("krate={name}")))
        .collect();
    assert_eq!(named.len(), 1, "{log}");
    assert!(named[0].contains("undecodable"), "{}", named[0]);
    let metrics = mirror.metrics().await;
    assert_eq!(
        metrics.get("crate_mirror_index_records_lost_total{reason=\"undecodable\"}"),
        Some(&1.0),
        "{metrics:?}"
    );
}
