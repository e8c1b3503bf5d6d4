//! `/ready`: whether the mirror can serve, from probes of what it depends on
//! (the data dir, the database, the upstream's config.json, the crate store).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::storage::s3::S3Store;
use crate::upstream::UpstreamClient;

/// How long `/ready` waits for the upstream's config.json when it is not known yet.
const READY_UPSTREAM_WAIT: Duration = Duration::from_secs(2);

/// The answer of `/ready`.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub data_dir_writable: bool,
    pub database_open: bool,
    pub upstream_config_known: bool,
    /// The crate store answers (always true for local storage, whose data dir
    /// is checked above; for S3, a bounded list request on the bucket).
    pub storage_ok: bool,
    /// Why the store does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

impl Readiness {
    /// Ready when every probe passed.
    pub fn from_probes(
        data_dir_writable: bool,
        database_open: bool,
        upstream_config_known: bool,
        storage: Result<(), String>,
    ) -> Self {
        Self {
            ready: data_dir_writable && database_open && upstream_config_known && storage.is_ok(),
            data_dir_writable,
            database_open,
            upstream_config_known,
            storage_ok: storage.is_ok(),
            storage_error: storage.err(),
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
}

impl ReadinessProbe {
    pub fn new(
        tmp_dir: PathBuf,
        db: sled::Db,
        upstream: Arc<UpstreamClient>,
        s3: Option<Arc<S3Store>>,
    ) -> Self {
        Self {
            tmp_dir,
            db,
            upstream,
            s3,
        }
    }

    pub async fn check(&self) -> Readiness {
        let data_dir_writable = writable(&self.tmp_dir).await;
        let database_open = database_answers(self.db.clone()).await;
        // Bounded, so a probe never hangs on a stalled upstream.
        let upstream_config_known = self.upstream.config_known()
            || tokio::time::timeout(READY_UPSTREAM_WAIT, self.upstream.config())
                .await
                .is_ok_and(|config| config.is_ok());
        let storage = match &self.s3 {
            Some(s3) => s3.check().await,
            None => Ok(()),
        };
        Readiness::from_probes(
            data_dir_writable,
            database_open,
            upstream_config_known,
            storage,
        )
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

    #[test]
    fn ready_only_when_every_probe_passes() {
        let all = Readiness::from_probes(true, true, true, Ok(()));
        assert!(all.ready && all.storage_ok && all.storage_error.is_none());
        for (dir, db, upstream) in [
            (false, true, true),
            (true, false, true),
            (true, true, false),
        ] {
            let report = Readiness::from_probes(dir, db, upstream, Ok(()));
            assert!(!report.ready, "{report:?}");
            assert!(report.storage_ok);
        }
        let bucket = Readiness::from_probes(true, true, true, Err("no bucket".into()));
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
