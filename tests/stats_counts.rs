//! `/api/stats` counts from counters, not by walking sled: the counts must stay
//! exact through inserts, replacements and removals, agree with `/metrics`,
//! survive a restart, and match what the sled tree really holds.

use std::time::Duration;

use support::client;
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};

/// The sparse path of a crate name of four or more characters.
fn index_path(name: &str) -> String {
    format!("{}/{}/{name}", &name[..2], &name[2..4])
}

async fn get_index(mirror: &Mirror, name: &str) -> u16 {
    client()
        .get(format!("{}{}", mirror.index_url(), index_path(name)))
        .send()
        .await
        .expect("index request")
        .status()
        .as_u16()
}

/// `index_files_stored` from `/api/stats`, checked against the `/metrics` gauge.
async fn stored(mirror: &Mirror) -> u64 {
    let stats = mirror.stats().await["index_files_stored"]
        .as_u64()
        .expect("index_files_stored is a number");
    let gauge = mirror.metrics().await["crate_mirror_index_files"];
    assert_eq!(gauge, stats as f64, "/metrics and /api/stats disagree");
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_files_stored_stays_exact_through_inserts_replacements_and_removals() {
    let names = ["alpha", "bravo", "charlie", "delta"];
    let specs: Vec<CrateSpec> = names.iter().map(|n| CrateSpec::new(n, "1.0.0")).collect();
    let upstream = TestUpstream::start(&specs[..3], DlStyle::Plain);
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // Every request goes to the upstream: each one stores, replaces or removes.
    let args = [
        "--index-ttl",
        "0",
        "--index-max-stale",
        "0",
        "--negative-ttl",
        "0",
        "--prefetch",
        "off",
    ];
    let mut mirror = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .args(&args)
        .start();
    assert_eq!(stored(&mirror).await, 0);

    // Inserts, and the same files again (unchanged: stored anew in place).
    for name in &names[..3] {
        assert_eq!(get_index(&mirror, name).await, 200);
    }
    assert_eq!(stored(&mirror).await, 3);
    for name in &names[..3] {
        assert_eq!(get_index(&mirror, name).await, 200);
    }
    assert_eq!(stored(&mirror).await, 3);

    // A replacement: a new body for a stored file.
    upstream.publish_all(&[CrateSpec::new("alpha", "1.1.0")]);
    assert_eq!(get_index(&mirror, "alpha").await, 200);
    assert_eq!(stored(&mirror).await, 3);

    // Removals: the upstream no longer has the file; asking again removes nothing.
    upstream.set_index("bravo", 404, "");
    assert_eq!(get_index(&mirror, "bravo").await, 404);
    assert_eq!(stored(&mirror).await, 2);
    assert_eq!(get_index(&mirror, "bravo").await, 404);
    assert_eq!(stored(&mirror).await, 2);
    upstream.set_index("charlie", 410, "");
    assert_eq!(get_index(&mirror, "charlie").await, 410);
    assert_eq!(stored(&mirror).await, 1);

    // Never stored, then stored; a removed file coming back.
    assert_eq!(get_index(&mirror, "delta").await, 404);
    assert_eq!(stored(&mirror).await, 1);
    upstream.publish_all(&specs[3..]);
    upstream.publish_all(&[CrateSpec::new("bravo", "2.0.0")]);
    assert_eq!(get_index(&mirror, "delta").await, 200);
    assert_eq!(get_index(&mirror, "bravo").await, 200);
    assert_eq!(stored(&mirror).await, 3);

    // Many clients at once on the same files: the count does not drift.
    let requests: Vec<_> = (0..40)
        .map(|n| {
            let url = format!("{}{}", mirror.index_url(), index_path(names[n % 4]));
            tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    for request in requests {
        let _ = request.await.unwrap();
    }
    assert_eq!(stored(&mirror).await, 3);

    // A restart counts what is stored, and that is what sled holds.
    mirror.terminate();
    let exited = tokio::task::block_in_place(|| mirror.wait_exit(Duration::from_secs(30)));
    assert!(exited.is_some_and(|s| s.success()), "exit: {exited:?}");
    let in_sled = {
        let db = sled::open(data.join("sled")).unwrap();
        db.open_tree("index").unwrap().len() as u64
    };
    assert_eq!(in_sled, 3);
    let restarted = Mirror::builder(&upstream.url)
        .data_dir(&data)
        .args(&args)
        .start();
    assert_eq!(stored(&restarted).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_crate_counts_follow_downloads() {
    let specs = [
        CrateSpec::new("echo", "1.0.0").padding(1000),
        CrateSpec::new("echo", "1.1.0"),
        CrateSpec::new("foxtrot", "1.0.0"),
    ];
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    let published = upstream.publish_all(&specs);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--prefetch", "off"])
        .start();
    let storage = |stats: &serde_json::Value| {
        (
            stats["storage"]["objects"].as_u64(),
            stats["storage"]["bytes"].as_u64(),
        )
    };
    assert_eq!(storage(&mirror.stats().await), (Some(0), Some(0)));
    // Each twice: the second is served from storage and adds nothing.
    for _ in 0..2 {
        for p in &published {
            let url = format!(
                "{}/api/v1/crates/{}/{}/download",
                mirror.url, p.name, p.vers
            );
            let body = client().get(url).send().await.unwrap().bytes().await;
            assert_eq!(body.unwrap(), p.tarball);
        }
    }
    let bytes: usize = published.iter().map(|p| p.tarball.len()).sum();
    assert_eq!(
        storage(&mirror.stats().await),
        (Some(3), Some(bytes as u64))
    );
    let metrics = mirror.metrics().await;
    assert_eq!(metrics["crate_mirror_storage_objects"], 3.0);
    assert_eq!(metrics["crate_mirror_storage_bytes"], bytes as f64);
}
