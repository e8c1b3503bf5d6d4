//! The figures read from outside the metrics (the stores' counters, the
//! upstream's circuit, the git index): set into the gauges before `/metrics`
//! is encoded, and added to the metrics' own figures for `/api/stats`.
//! Counters only, so both are cheap however much is stored.

use crate::metrics::Metrics;
use crate::storage::stores::StorageFigures;

/// What the gauges and the dashboard read from the other parts, taken at once.
#[derive(Debug, Clone)]
pub struct Sources {
    pub index_files: usize,
    pub circuit_open: bool,
    /// Running `--offline` (the dashboard says so).
    pub offline: bool,
    /// The hot cache: bytes held (gzip bodies) and their plain size.
    pub index_memory: (u64, u64),
    pub storage: StorageFigures,
    /// The git index's figures, when it is enabled.
    pub git: Option<serde_json::Value>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Sets the gauges that are read from the stores' counters (kept by the
/// stores as they write; nothing here walks sled).
pub fn refresh_gauges(metrics: &Metrics, sources: &Sources) {
    metrics
        .index
        .files
        .set(i64::try_from(sources.index_files).unwrap_or(i64::MAX));
    metrics
        .upstream
        .circuit_open
        .set(i64::from(sources.circuit_open));
    let (held, plain) = sources.index_memory;
    metrics.index.memory_bytes.set(to_i64(held));
    metrics.index.memory_plain_bytes.set(to_i64(plain));
    let storage = &sources.storage;
    if let Some(bytes) = storage.memory_bytes {
        metrics.storage.memory_bytes.set(to_i64(bytes));
    }
    // The local store's figures (S3 keeps none).
    if storage.backend == "local" {
        let gauges = &metrics.storage;
        gauges.bytes.set(to_i64(storage.bytes.unwrap_or(0)));
        gauges.objects.set(to_i64(storage.objects.unwrap_or(0)));
        gauges.set_quota(storage.quota_bytes);
    }
}

/// The dashboard's feed: the metrics' figures plus storage and git state.
pub fn stats(metrics: &Metrics, sources: &Sources) -> serde_json::Value {
    refresh_gauges(metrics, sources);
    let mut stats = metrics.snapshot();
    let storage = &sources.storage;
    stats["index_files_stored"] = sources.index_files.into();
    stats["storage_bytes"] = storage.bytes.into();
    stats["storage_quota_bytes"] = storage.quota_bytes.into();
    stats["storage"] = serde_json::json!({
        "backend": storage.backend,
        "bytes": storage.bytes,
        "objects": storage.objects,
        "quota_bytes": storage.quota_bytes,
        "memory_files": storage.memory_files,
        "memory_bytes": storage.memory_bytes,
    });
    stats["git"] = sources.git.clone().into();
    stats["offline"] = sources.offline.into();
    let (held, plain) = sources.index_memory;
    stats["index_memory"] = serde_json::json!({
        "bytes": held,
        "plain_bytes": plain,
    });
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(storage: StorageFigures) -> Sources {
        Sources {
            index_files: 7,
            circuit_open: true,
            offline: false,
            index_memory: (1000, 15000),
            storage,
            git: None,
        }
    }

    const LOCAL: StorageFigures = StorageFigures {
        backend: "local",
        bytes: Some(300),
        objects: Some(2),
        quota_bytes: None,
        memory_files: Some(1),
        memory_bytes: Some(100),
    };

    #[test]
    fn gauges_follow_the_sources() {
        let metrics = Metrics::new();
        refresh_gauges(&metrics, &sources(LOCAL));
        assert_eq!(metrics.index.files.get(), 7);
        assert_eq!(metrics.upstream.circuit_open.get(), 1);
        assert_eq!(metrics.storage.bytes.get(), 300);
        assert_eq!(metrics.storage.objects.get(), 2);
        assert_eq!(metrics.storage.quota(), None);
        assert_eq!(metrics.storage.memory_bytes.get(), 100);
        let text = String::from_utf8(metrics.encode()).unwrap();
        assert!(
            text.contains("\ncrate_mirror_storage_bytes 300\n"),
            "{text}"
        );
        assert!(text.contains("\ncrate_mirror_index_files 7\n"), "{text}");
    }

    #[test]
    fn stats_add_storage_and_git_to_the_metrics_figures() {
        let metrics = Metrics::new();
        metrics.index.lookups.with_label_values(&["hit"]).inc();
        let local = stats(&metrics, &sources(LOCAL));
        assert_eq!(local["index"]["hits"], 1);
        assert_eq!(local["index_files_stored"], 7);
        assert_eq!(local["storage_bytes"], 300);
        assert_eq!(local["storage_quota_bytes"], serde_json::Value::Null);
        assert_eq!(
            local["storage"],
            serde_json::json!({
                "backend": "local",
                "bytes": 300,
                "objects": 2,
                "quota_bytes": null,
                "memory_files": 1,
                "memory_bytes": 100,
            })
        );
        assert_eq!(local["git"], serde_json::Value::Null);
        // The stats set the gauges too, so /metrics and /api/stats agree.
        assert_eq!(metrics.storage.bytes.get(), 300);

        let s3 = StorageFigures {
            backend: "s3",
            bytes: None,
            objects: None,
            quota_bytes: None,
            memory_files: None,
            memory_bytes: None,
        };
        let metrics = Metrics::new();
        let mut with_git = sources(s3);
        with_git.git = Some(serde_json::json!({ "builds": 3 }));
        let remote = stats(&metrics, &with_git);
        assert_eq!(remote["storage"]["backend"], "s3");
        assert_eq!(remote["storage"]["bytes"], serde_json::Value::Null);
        assert_eq!(remote["git"]["builds"], 3);
    }
}
