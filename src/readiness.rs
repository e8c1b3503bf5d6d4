//! `/ready`: whether this node can serve from its cache, from probes of what
//! it depends on (the data dir, the database, the crate store). The upstream
//! is reported but never gates readiness: a pod restarted during an upstream
//! outage must still take traffic, since that is when its cache matters most.
//!
//! A database found damaged at start and replaced by an empty one is
//! reported (`database`), and does not gate readiness either: the new
//! database answers, crates are served from storage and index files are
//! fetched again, so the node serves; keeping it out of the service would
//! keep it out until the next restart, for damage already dealt with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::data_dir::DatabaseStart;
use crate::storage::s3::S3Store;
use crate::upstream::UpstreamClient;

/// How long `/ready` waits for the upstream's config.json when it is not known
/// yet (never known nor kept from a previous run): only for the report, and
/// alongside the S3 check (at most 3 s), so the probe stays within the 3 s
/// timeout of deploy/kubernetes/deployment.yaml.
const READY_UPSTREAM_WAIT: Duration = Duration::from_secs(2);

/// The answer of `/ready`.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub data_dir_writable: bool,
    pub database_open: bool,
    /// Information only: a config.json (fetched now or kept from a previous
    /// run) gives the download template.
    pub upstream_config_known: bool,
    /// Information only: whether the last config.json fetch succeeded (`null`
    /// before the first).
    pub upstream_config_fetch_ok: Option<bool>,
    /// Information only: the upstream's circuit breaker is open (recent
    /// requests failed).
    pub upstream_circuit_open: bool,
    /// The crate store answers (always true for local storage, whose data dir
    /// is checked above; for S3, a bounded list request on the bucket).
    pub storage_ok: bool,
    /// Why the store does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
    /// Information only: what the start found of the database (damaged and
    /// rebuilt, where the damaged copy is, index files lost).
    pub database: DatabaseStart,
}

/// What `/ready` reports of the upstream, without gating on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamReport {
    pub config_known: bool,
    pub config_fetch_ok: Option<bool>,
    pub circuit_open: bool,
}

impl Readiness {
    /// Ready when the node's own probes passed (the data dir, the database,
    /// the store); the upstream is only reported.
    pub fn from_probes(
        data_dir_writable: bool,
        database_open: bool,
        upstream: UpstreamReport,
        storage: Result<(), String>,
    ) -> Self {
        Self {
            ready: data_dir_writable && database_open && storage.is_ok(),
            data_dir_writable,
            database_open,
            upstream_config_known: upstream.config_known,
            upstream_config_fetch_ok: upstream.config_fetch_ok,
            upstream_circuit_open: upstream.circuit_open,
            storage_ok: storage.is_ok(),
            storage_error: storage.err(),
            database: DatabaseStart::default(),
        }
    }
}

/// What `/ready` probes, and only that.
pub struct ReadinessProbe {
    /// Where a probe file is written and removed (the data dir's tmp dir).
    tmp_dir: PathBuf,
    db: sled::Db,
    upstream: Arc<UpstreamClient>,
    /// The S3 backend, when in use (local storage is the data dir, probed above).
    s3: Option<Arc<S3Store>>,
    /// What the start found of the database, reported as it is.
    database: DatabaseStart,
}

impl ReadinessProbe {
    pub fn new(
        tmp_dir: PathBuf,
        db: sled::Db,
        upstream: Arc<UpstreamClient>,
        s3: Option<Arc<S3Store>>,
        database: DatabaseStart,
    ) -> Self {
        Self {
            tmp_dir,
            db,
            upstream,
            s3,
            database,
        }
    }

    pub async fn check(&self) -> Readiness {
        let data_dir_writable = writable(&self.tmp_dir).await;
        let database_open = database_answers(self.db.clone()).await;
        // Both bounded and run together, so the probe's time is the longer
        // of the two, not their sum; the upstream is reported, not required.
        let (config_known, storage) = tokio::join!(
            async {
                self.upstream
                    .config_within(READY_UPSTREAM_WAIT)
                    .await
                    .is_some()
            },
            async {
                match &self.s3 {
                    Some(s3) => s3.check().await,
                    None => Ok(()),
                }
            }
        );
        let upstream = UpstreamReport {
            config_known,
            config_fetch_ok: self.upstream.config_fetch_ok(),
            circuit_open: self.upstream.circuit_open(),
        };
        Readiness {
            database: self.database.clone(),
            ..Readiness::from_probes(data_dir_writable, database_open, upstream, storage)
        }
    }
}

/// A file can be written to and removed from `dir`.
async fn writable(dir: &Path) -> bool {
    let probe = dir.join(".ready-probe");
    tokio::fs::write(&probe, b"ok").await.is_ok() && tokio::fs::remove_file(&probe).await.is_ok()
}

/// sled answers a read (off the async threads: sled blocks).
async fn database_answers(db: sled::Db) -> bool {
    tokio::task::spawn_blocking(move || db.get(b"ready-probe").is_ok())
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: UpstreamReport = UpstreamReport {
        config_known: true,
        config_fetch_ok: Some(true),
        circuit_open: false,
    };

    #[test]
    fn ready_only_when_every_node_probe_passes() {
        let all = Readiness::from_probes(true, true, UP, Ok(()));
        assert!(all.ready && all.storage_ok && all.storage_error.is_none());
        for (dir, db) in [(false, true), (true, false)] {
            let report = Readiness::from_probes(dir, db, UP, Ok(()));
            assert!(!report.ready, "{report:?}");
            assert!(report.storage_ok);
        }
        let bucket = Readiness::from_probes(true, true, UP, Err("no bucket".into()));
        assert!(!bucket.ready && !bucket.storage_ok);
        assert_eq!(bucket.storage_error.as_deref(), Some("no bucket"));
        // The reason is only in the answer when there is one.
        let json = serde_json::to_value(&all).unwrap();
        assert!(json.get("storage_error").is_none());
        assert_eq!(
            serde_json::to_value(&bucket).unwrap()["storage_error"],
            "no bucket"
        );
    }

    /// An unreachable upstream, known or not, is reported but leaves the node ready.
    #[test]
    fn the_upstream_is_reported_not_required() {
        for upstream in [
            UpstreamReport::default(),
            UpstreamReport {
                config_known: true,
                config_fetch_ok: Some(false),
                circuit_open: true,
            },
        ] {
            let report = Readiness::from_probes(true, true, upstream, Ok(()));
            assert!(report.ready, "{report:?}");
            let json = serde_json::to_value(&report).unwrap();
            assert_eq!(json["upstream_config_known"], upstream.config_known);
            assert_eq!(json["upstream_circuit_open"], upstream.circuit_open);
        }
        let never = serde_json::to_value(Readiness::from_probes(
            true,
            true,
            UpstreamReport::default(),
            Ok(()),
        ))
        .unwrap();
        assert!(never["upstream_config_fetch_ok"].is_null());
    }

    #[tokio::test]
    async fn the_data_dir_and_database_probes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(dir.path()).await);
        // The probe file is removed again.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!writable(&dir.path().join("missing")).await);
        let db = sled::Config::new().temporary(true).open().unwrap();
        assert!(database_answers(db).await);
    }
}
