//! Crashes and stops: kill -9 in the middle of 50 cold downloads leaves nothing
//! bad behind; SIGTERM lets in-flight downloads finish and flushes the database;
//! after SIGTERM the background work (a git rebuild, prefetches) is stopped or
//! finished before the process exits, so nothing writes to the data dir after.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use support::cargo::{project, CargoHome};
use support::client;
use support::mirror::Mirror;
use support::registry::{layered_graph, publish, CrateSpec, Published};
use support::upstream::{DlStyle, TestUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_50_cold_downloads_leaves_nothing_bad() {
    let published: Vec<Published> = (0..50)
        .map(|n| publish(&CrateSpec::new(&format!("crash{n:02}"), "1.0.0").padding(200_000)))
        .collect();
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    for p in &published {
        upstream.add(p);
    }
    // About 13 chunks of 16 KiB, 40 ms apart: each download takes half a second.
    upstream.switches.chunk_delay_ms.store(40, Ordering::SeqCst);
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut mirror = Mirror::builder(&upstream.url).data_dir(&data).start();

    let downloads: Vec<_> = published
        .iter()
        .map(|p| {
            let url = format!("{}/api/v1/crates/{}/1.0.0/download", mirror.url, p.name);
            tokio::spawn(async move {
                match client().get(url).send().await {
                    Ok(response) => response.bytes().await.map(|b| b.len()).unwrap_or(0),
                    Err(_) => 0,
                }
            })
        })
        .collect();
    // Kill once the downloads are under way (some written, none finished).
    let mut waited = 0;
    while mirror.stored_files(".part").len() < 25 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    let in_flight = mirror.stored_files(".part").len();
    mirror.kill();
    let finished_before_kill = mirror.stored_files(".crate").len();
    for download in downloads {
        let _ = download.await;
    }
    assert!(
        in_flight >= 25,
        "only {in_flight} downloads were in flight at the kill"
    );
    assert!(
        finished_before_kill < 50,
        "everything finished before the kill"
    );

    // Restart: temp files of the dead process are gone, verify finds nothing bad.
    upstream.switches.chunk_delay_ms.store(0, Ordering::SeqCst);
    let restarted = Mirror::builder(&upstream.url).data_dir(&data).start();
    assert!(restarted.stored_files(".part").is_empty());
    let verify = restarted.run_command("verify", &upstream.url, &[]);
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("bad 0"), "{stdout}");

    // And cargo completes against the restarted mirror.
    let mut manifest =
        "[package]\nname = \"after-crash\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n".to_string();
    for p in &published {
        manifest.push_str(&format!("{} = \"1\"\n", p.name));
    }
    let app = project(&manifest);
    let target = tempfile::tempdir().unwrap();
    CargoHome::new(&restarted.index_url()).run_ok(app.path(), target.path(), &["fetch"]);
    for p in &published {
        let stored = restarted.stored_files(&format!("/{}-1.0.0.crate", p.name));
        assert_eq!(stored.len(), 1, "{}", p.name);
        assert_eq!(std::fs::read(&stored[0]).unwrap(), p.tarball, "{}", p.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_downloads_and_flushes_the_database() {
    let big = publish(&CrateSpec::new("slowpoke", "1.0.0").padding(1 << 20));
    let upstream = TestUpstream::start(&[CrateSpec::new("indexed", "1.0.0")], DlStyle::Plain);
    upstream.add(&big);
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // sled writes to disk only when asked: only the shutdown's flush can
    // persist the index file cached below.
    let mut mirror = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .args(&["--shutdown-timeout", "20", "--db-flush-interval", "0"])
        .start();
    assert_eq!(mirror.get("/index/in/de/indexed").await.status(), 200);

    // 64 chunks, 30 ms apart: about two seconds upstream.
    upstream.switches.chunk_delay_ms.store(30, Ordering::SeqCst);
    let response = mirror.get("/api/v1/crates/slowpoke/1.0.0/download").await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    use futures_util::StreamExt;
    body.extend_from_slice(&stream.next().await.unwrap().unwrap());

    mirror.terminate();
    // No new connections once stopping: the listener closes (waited for,
    // within a bound, since the signal is handled asynchronously).
    // A new client each time: a pooled connection would be a connection
    // already accepted, which the draining server still serves.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client()
        .get(format!("{}/health", mirror.url))
        .send()
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror still accepted connections 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The download in flight completes, whole and correct.
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.expect("the in-flight download was cut off"));
    }
    assert_eq!(body, big.tarball);
    let status = tokio::task::block_in_place(|| mirror.wait_exit(Duration::from_secs(25)));
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    assert_eq!(mirror.stored_files("slowpoke-1.0.0.crate").len(), 1);

    // The database was flushed: the index file is there with the upstream gone.
    drop(upstream);
    let restarted = Mirror::builder("http://127.0.0.1:9/index/")
        .data_dir(&data)
        .start();
    let index = restarted.get("/index/in/de/indexed").await;
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["x-cache"], "HIT");
}

/// Every file below `dir` with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.insert(entry.path(), (meta.len(), modified));
            }
        }
    }
    files
}

/// The git on PATH.
fn real_git() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("git"))
        .find(|git| git.is_file())
        .expect("git on PATH")
}

/// A `git` that runs the real one, except that a fast-import first leaves a
/// file in `marks` and waits `seconds`: a slow rebuild of the git index,
/// under way whenever the test wants it.
fn slow_import_git(dir: &Path, marks: &Path, seconds: u32) {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\nfor arg in \"$@\"; do\n  if [ \"$arg\" = fast-import ]; then\n    : > '{}/import.'$$\n    sleep {seconds}\n    break\n  fi\ndone\nexec '{}' \"$@\"\n",
        marks.display(),
        real_git().display()
    );
    let git = dir.join("git");
    std::fs::write(&git, script).unwrap();
    std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_nothing_writes_to_the_data_dir() {
    let (specs, _) = layered_graph(4, 6);
    let upstream = TestUpstream::start(&specs, DlStyle::Plain);
    // Each prefetch takes a while: some are in flight at the SIGTERM.
    upstream.switches.delay_ms.store(300, Ordering::SeqCst);
    let tools = tempfile::tempdir().unwrap();
    let marks = tools.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    slow_import_git(tools.path(), &marks, 2);
    let path = std::env::join_paths(std::iter::once(tools.path().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut mirror = Mirror::builder(&upstream.url)
        .public_url()
        .args(&[
            "--git-index",
            "on",
            "--git-rebuild-delay",
            "0",
            "--prefetch-depth",
            "3",
            "--shutdown-timeout",
            "20",
        ])
        .env("PATH", &path)
        .start();

    // The first rebuild (config.json) starts with the mirror: wait until its
    // fast-import is under way.
    let mut waited = 0;
    while std::fs::read_dir(&marks).unwrap().count() == 0 && waited < 400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        waited += 1;
    }
    assert!(
        std::fs::read_dir(&marks).unwrap().count() > 0,
        "no git rebuild started"
    );
    // A client's request: prefetch walks the graph below it.
    let root = mirror.get("/index/la/ye/layer0-crate000").await;
    assert_eq!(root.status(), 200);
    let mut waited = 0;
    while upstream.count_matching("layer1-") == 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert!(
        upstream.count_matching("layer1-") > 0,
        "no prefetch started"
    );

    mirror.terminate();
    let status = tokio::task::block_in_place(|| mirror.wait_exit(Duration::from_secs(20)));
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit within the shutdown timeout: {status:?}"
    );
    let at_exit = snapshot(&mirror.data_dir);
    assert!(!at_exit.is_empty());
    // Longer than the slow fast-import's wait: git left running would write now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = snapshot(&mirror.data_dir);
    let changed: Vec<&PathBuf> = later
        .iter()
        .filter(|(path, now)| at_exit.get(*path) != Some(*now))
        .map(|(path, _)| path)
        .chain(at_exit.keys().filter(|path| !later.contains_key(*path)))
        .collect();
    assert!(
        changed.is_empty(),
        "written after the mirror exited: {changed:#?}"
    );
}
