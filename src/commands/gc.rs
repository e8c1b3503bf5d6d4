//! `crate-mirror gc`: one eviction pass over local storage, for a data dir no
//! mirror is running on (a running mirror evicts in the background itself).

use std::path::Path;

use crate::config::StorageConfig;
use crate::storage::local::{EvictionReport, LocalStore};
use crate::StartError;

/// One eviction pass over local storage.
pub fn gc(data_dir: &Path, storage: &StorageConfig) -> Result<EvictionReport, StartError> {
    let StorageConfig::Local { max_bytes } = storage else {
        return Err(StartError::Unsupported(
            "gc applies to local storage; S3 buckets are bounded by lifecycle rules".into(),
        ));
    };
    if max_bytes.is_none() {
        return Err(StartError::Unsupported("gc needs --max-storage".into()));
    }
    let db_path = data_dir.join("sled");
    let db =
        sled::open(&db_path).map_err(|source| StartError::database(db_path.clone(), source))?;
    let tree = db
        .open_tree("crate_access")
        .map_err(|source| StartError::database(db_path, source))?;
    let store = LocalStore::with_accounting(data_dir, tree, *max_bytes)?;
    store.reconcile()?;
    let report = store.evict()?;
    let _ = db.flush();
    Ok(report)
}
