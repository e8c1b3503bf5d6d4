//! Crashes and stops: kill -9 in the middle of 50 cold downloads leaves nothing
//! bad behind; SIGTERM lets in-flight downloads finish and flushes the database.

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::cargo::{project, run_ok, CargoHome};
use support::client;
use support::mirror::Mirror;
use support::registry::{publish, CrateSpec, Published};
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
    run_ok(
        &CargoHome::new(&restarted.index_url()),
        app.path(),
        target.path(),
        &["fetch"],
    );
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
    let mut mirror = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .args(&["--shutdown-timeout", "20"])
        .start();
    let http = client();
    assert_eq!(
        http.get(format!("{}in/de/indexed", mirror.index_url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // 64 chunks, 30 ms apart: about two seconds upstream.
    upstream.switches.chunk_delay_ms.store(30, Ordering::SeqCst);
    let response = http
        .get(format!(
            "{}/api/v1/crates/slowpoke/1.0.0/download",
            mirror.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    use futures_util::StreamExt;
    body.extend_from_slice(&stream.next().await.unwrap().unwrap());

    mirror.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new connections once stopping.
    let refused = http.get(format!("{}/health", mirror.url)).send().await;
    assert!(
        refused.is_err(),
        "the mirror still accepted connections after SIGTERM"
    );
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
    let index = http
        .get(format!("{}in/de/indexed", restarted.index_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["x-cache"], "HIT");
}
