//! Local storage: the quota with least-recently-used eviction (in the server and
//! by `crate-mirror gc`), and `crate-mirror verify`.

use std::time::Duration;

use support::client;
use support::mirror::Mirror;
use support::registry::{publish, CrateSpec, Published};
use support::upstream::{DlStyle, TestUpstream};

fn four_crates() -> Vec<Published> {
    (1..=4)
        .map(|n| publish(&CrateSpec::new(&format!("lru{n}"), "1.0.0").padding(100_000)))
        .collect()
}

fn upstream_with(crates: &[Published]) -> TestUpstream {
    let upstream = TestUpstream::start(&[], DlStyle::Plain);
    for p in crates {
        upstream.add(p);
    }
    upstream
}

async fn download(mirror: &Mirror, p: &Published) -> String {
    let response = client()
        .get(format!(
            "{}/api/v1/crates/{}/{}/download",
            mirror.url, p.name, p.vers
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["x-cache"].to_str().unwrap().to_string();
    assert_eq!(response.bytes().await.unwrap(), p.tarball);
    cache
}

fn stored(mirror: &Mirror, p: &Published) -> bool {
    !mirror
        .stored_files(&format!("/{}-{}.crate", p.name, p.vers))
        .is_empty()
}

fn stored_bytes(mirror: &Mirror) -> u64 {
    mirror
        .stored_files(".crate")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[tokio::test]
async fn the_least_recently_used_crates_are_evicted_to_stay_under_the_quota() {
    let crates = four_crates();
    let upstream = upstream_with(&crates);
    let sizes: Vec<u64> = crates.iter().map(|p| p.tarball.len() as u64).collect();
    // Room for three and a half crates: the fourth download goes over.
    let quota = sizes[0] + sizes[1] + sizes[2] + sizes[3] / 2;
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--max-storage", &quota.to_string()])
        .start();

    for p in &crates[..3] {
        assert_eq!(download(&mirror, p).await, "MISS");
    }
    // lru1 becomes the most recently used; lru2 is now the least.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(download(&mirror, &crates[0]).await, "HIT");
    assert_eq!(download(&mirror, &crates[3]).await, "MISS");

    let mut waited = 0;
    while stored(&mirror, &crates[1]) && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(
        !stored(&mirror, &crates[1]),
        "the least recently used crate was kept"
    );
    for p in [&crates[0], &crates[2], &crates[3]] {
        assert!(stored(&mirror, p), "{} was evicted", p.name);
    }
    assert!(stored_bytes(&mirror) <= quota);
    let stats = mirror.stats().await;
    assert_eq!(
        stats["storage_bytes"].as_u64().unwrap(),
        stored_bytes(&mirror)
    );
    assert_eq!(stats["storage_quota_bytes"].as_u64().unwrap(), quota);
    // What the alerts watch: one crate evicted, its bytes, no failed pass.
    let evicted = |metrics: &std::collections::BTreeMap<String, f64>, name: &str| {
        metrics.get(name).copied().unwrap_or(-1.0)
    };
    support::wait_until(Duration::from_secs(10), "eviction counted", || async {
        evicted(
            &mirror.metrics().await,
            "crate_mirror_storage_evicted_total",
        ) == 1.0
    })
    .await;
    let metrics = mirror.metrics().await;
    assert_eq!(
        evicted(&metrics, "crate_mirror_storage_evicted_bytes_total"),
        sizes[1] as f64
    );
    assert_eq!(
        evicted(&metrics, "crate_mirror_storage_eviction_failures_total"),
        0.0
    );

    // An evicted crate is simply fetched again.
    assert_eq!(download(&mirror, &crates[1]).await, "MISS");
}

#[tokio::test]
async fn gc_evicts_offline_and_refuses_a_data_dir_in_use() {
    let crates = four_crates();
    let upstream = upstream_with(&crates);
    let mut mirror = Mirror::builder(&upstream.url).start();
    for p in &crates {
        download(&mirror, p).await;
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }
    let total = stored_bytes(&mirror);
    // Eviction goes down to 90% of the quota: 54% of the total, two of four crates.
    let quota = (total * 6 / 10).to_string();

    let busy = mirror.run_command("gc", &upstream.url, &["--max-storage", &quota]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("already running"));

    mirror.kill();
    let output = mirror.run_command("gc", &upstream.url, &["--max-storage", &quota]);
    support::assert_success(&output);
    assert!(String::from_utf8_lossy(&output.stdout).contains("evicted 2 crates"));
    assert!(stored_bytes(&mirror) <= total * 6 / 10);
    // Oldest first: the first two downloads went.
    assert!(!stored(&mirror, &crates[0]) && !stored(&mirror, &crates[1]));
    assert!(stored(&mirror, &crates[2]) && stored(&mirror, &crates[3]));
}

#[tokio::test]
async fn verify_removes_a_corrupted_crate_and_the_next_request_refetches_it() {
    let crates = four_crates();
    let upstream = upstream_with(&crates);
    let mirror = Mirror::builder(&upstream.url).start();
    for p in &crates {
        download(&mirror, p).await;
    }
    let clean = mirror.run_command("verify", &upstream.url, &[]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(String::from_utf8_lossy(&clean.stdout).contains("checked 4, good 4, bad 0"));

    // Flip one byte of one stored crate, behind the mirror's back.
    let victim = mirror.stored_files("/lru3-1.0.0.crate").remove(0);
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();

    // Beside the running mirror.
    let dirty = mirror.run_command("verify", &upstream.url, &[]);
    let stdout = String::from_utf8_lossy(&dirty.stdout);
    assert_eq!(dirty.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bad crates/lr/u3/lru3/lru3-1.0.0.crate"),
        "{stdout}"
    );
    assert!(stdout.contains("checked 4, good 3, bad 1"), "{stdout}");
    assert!(!victim.exists());

    assert_eq!(download(&mirror, &crates[2]).await, "MISS");
    assert_eq!(std::fs::read(&victim).unwrap(), crates[2].tarball);
    assert_eq!(download(&mirror, &crates[2]).await, "HIT");
}
