//! What one `/api/stats` call costs as the cache grows: a data dir is filled
//! with N index records (written to sled through the library's `IndexStore`)
//! and N crate files, for N = 1k, 10k, 50k and 100k; a release mirror starts
//! on it, and once its start-up reconcile has counted every crate file, 200
//! calls of `/api/stats` are timed one after another (median and p90).
//!
//! `--before PATH` names a binary built from the code before the stats
//! counters (e.g. `git worktree add /tmp/old-stats <commit>` and a release
//! build there): it is measured the same way, on a data dir filled the same
//! way, and the report puts both side by side. Other flags: `--calls N`,
//! `--sizes 1000,10000`. Run with `cargo bench --bench stats_cost [-- FLAGS]`;
//! writes `benches/results/stats_cost.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crate_mirror::index::store::{IndexStore, StoredHeader, StoredIndex};
use crate_mirror::storage::crate_key;
use crate_mirror::upstream::Validators;

use support::bench::{
    api_stats, build_mirror_binary, fail, ms, release_mirror, run_date, small_index_body,
    start_mirror, time_stats, write_results, Flags, STATS_WARM_UP,
};
use support::upstream::{DlStyle, TestUpstream};

const SIZES: [u64; 4] = [1_000, 10_000, 50_000, 100_000];
const CALLS: u64 = 200;
/// How long the start-up reconcile of the largest store may take.
const RECONCILE_LIMIT: Duration = Duration::from_secs(600);

fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body).expect("gzip in memory");
    Bytes::from(encoder.finish().expect("gzip in memory"))
}

/// Writes `files` index records into `data/sled` and as many crate files
/// under `data/crates`, as a mirror that cached them would have.
fn fill(data: &Path, files: u64) {
    let db = sled::open(data.join("sled")).unwrap_or_else(|e| fail(&format!("sled: {e}")));
    let store = IndexStore::open(&db).unwrap_or_else(|e| fail(&format!("index store: {e}")));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for n in 0..files {
        let name = format!("statfile{n:06}");
        let body = Bytes::from(small_index_body(&name));
        let record = StoredIndex {
            header: StoredHeader {
                upstream: Validators::default(),
                etag: format!("\"{n:032x}\""),
                changed_at_ms: now_ms,
                fetched_at_ms: now_ms,
                gzip: true,
                plain_len: None,
                upstream_gzip: false,
            },
            gzip: Some(gzip(&body)),
            body,
        };
        store
            .save(&name, &record)
            .unwrap_or_else(|e| fail(&format!("save: {e}")));
        let path = data.join(crate_key(&name, "1.0.0"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("mkdir: {e}")));
        }
        std::fs::write(&path, [0u8; 64]).unwrap_or_else(|e| fail(&format!("crate file: {e}")));
    }
    db.flush().unwrap_or_else(|e| fail(&format!("flush: {e}")));
}

/// One binary's figures at one size.
struct Measured {
    start: Duration,
    median: Duration,
    p90: Duration,
}

/// Starts `binary` on a data dir holding `files` of each kind, waits for its
/// counts to reach them, then times `calls` calls of `/api/stats`.
async fn measure(binary: &Path, upstream: &str, files: u64, calls: u64) -> Measured {
    let temp = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let data = temp.path().join("data");
    fill(&data, files);
    let started = Instant::now();
    let mirror = start_mirror(
        release_mirror(binary, upstream)
            .args(&["--prefetch", "off"])
            .data_dir(&data),
    );
    let start = started.elapsed();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| fail(&format!("client: {e}")));
    let waiting = Instant::now();
    loop {
        let now = api_stats(&client, &mirror.url).await;
        let index = now["index_files_stored"].as_u64();
        let objects = now["storage"]["objects"].as_u64();
        if index == Some(files) && objects == Some(files) {
            break;
        }
        if waiting.elapsed() > RECONCILE_LIMIT {
            fail(&format!(
                "{}: counts stuck at {index:?} index files and {objects:?} crate files of {files}; log:\n{}",
                binary.display(),
                mirror.log_tail(20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let latency = time_stats(&client, &mirror.url, calls).await;
    mirror.stop();
    Measured {
        start,
        median: latency.median,
        p90: latency.p90,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut before: Option<PathBuf> = None;
    let mut calls = CALLS;
    let mut sizes = SIZES.to_vec();
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.next_flag() {
        match flag.as_str() {
            "--before" => before = Some(PathBuf::from(flags.text("--before"))),
            "--calls" => calls = flags.count("--calls"),
            "--sizes" => {
                let raw = flags.text("--sizes");
                sizes = raw
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse()
                            .unwrap_or_else(|_| fail(&format!("--sizes: not a number: {s}")))
                    })
                    .collect();
            }
            other => fail(&format!("unknown flag {other}")),
        }
    }
    if let Some(path) = &before {
        if !path.is_file() {
            fail(&format!("--before: no binary at {}", path.display()));
        }
    }
    let after = build_mirror_binary();
    // Never asked for an index file: it answers config.json, nothing else.
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let mut rows = Vec::new();
    for &files in &sizes {
        eprintln!("bench: {files} files, this code");
        let now = measure(&after, &upstream.url, files, calls).await;
        let old = match &before {
            Some(binary) => {
                eprintln!("bench: {files} files, the code before");
                Some(measure(binary, &upstream.url, files, calls).await)
            }
            None => None,
        };
        rows.push((files, old, now));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = run_date();
    let mut report = format!(
        "# Cost of `/api/stats` by cache size\n\nGenerated by `cargo bench --bench stats_cost` on {date}, {cpus} CPUs. A release mirror (prefetch off, local storage) starts on a data dir holding N index records in sled and N crate files; once its counts show all of them, {calls} calls of `/api/stats` are made one after another over one connection ({STATS_WARM_UP} untimed first). \"start\" is from spawning the process to its listening line: one sample per size, so noisy on a shared machine; after the change it includes the one-time count of the index tree when the data dir is opened (the crate tree is still empty then: the start-up reconcile fills it, in the background).\n\n"
    );
    if before.is_some() {
        report.push_str("Before: the code whose `/api/stats` asked sled for the length of the index tree and of the crate accounting tree, twice each per call (each a walk of the tree). After: counters kept by the stores, counted once when the data dir is opened.\n\n| files | before: median | before: p90 | after: median | after: p90 | before: start | after: start |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    } else {
        report.push_str("| files | median | p90 | start |\n| --- | --- | --- | --- |\n");
    }
    for (files, old, now) in &rows {
        match old {
            Some(old) => report.push_str(&format!(
                "| {files} | {} | {} | {} | {} | {} | {} |\n",
                ms(old.median),
                ms(old.p90),
                ms(now.median),
                ms(now.p90),
                ms(old.start),
                ms(now.start)
            )),
            None => report.push_str(&format!(
                "| {files} | {} | {} | {} |\n",
                ms(now.median),
                ms(now.p90),
                ms(now.start)
            )),
        }
    }
    println!("{report}");
    write_results("stats_cost.md", &report);
    ExitCode::SUCCESS
}
