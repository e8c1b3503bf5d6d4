//! `crate-mirror import FILE`: a bundle into a data dir (and its local or S3
//! storage), for a mirror that then serves it, `--offline` on a site with no
//! upstream. All of the bundle is checked before anything is written (see
//! `bundle::read`); then `.crate` files go in first and index files after,
//! so no index file ever names a crate that is not there. Index files merge
//! with what is stored by version, never losing one; a crate already stored
//! is left as it is. Importing the same bundle twice changes nothing.

use std::path::Path;

use super::progress::{Progress, Unit};
use crate::bundle::index_lines::{merge, versions};
use crate::bundle::read::{read_and_verify, VerifiedBundle};
use crate::bundle::{human_bytes, BundleError};
use crate::index::cache::record_of;
use crate::storage::crate_key;
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle failed a check: nothing was imported.
    #[error("{0}; nothing was imported")]
    Bundle(#[from] BundleError),
    #[error("while storing {what}: {reason}")]
    Store { what: String, reason: String },
}

impl ImportError {
    fn store(what: impl Into<String>, reason: impl ToString) -> Self {
        ImportError::Store {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub index_files: usize,
    /// Versions the stored index files did not list before.
    pub new_versions: usize,
    pub crates: usize,
    pub crates_present: usize,
    pub crate_bytes: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} index files ({} new versions) and {} crates ({}); {} crates were already there",
            self.index_files,
            self.new_versions,
            self.crates,
            human_bytes(self.crate_bytes),
            self.crates_present
        )
    }
}

/// Imports `bundle` into `state`'s data dir and storage.
pub async fn import(state: &AppState, bundle: &Path) -> Result<ImportReport, ImportError> {
    let staging = state
        .tmp_dir()
        .join(format!("import-{}", std::process::id()));
    let result = import_staged(state, bundle, &staging).await;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    result
}

async fn import_staged(
    state: &AppState,
    bundle: &Path,
    staging: &Path,
) -> Result<ImportReport, ImportError> {
    let io = |source| BundleError::Io {
        path: staging.display().to_string(),
        source,
    };
    tokio::fs::create_dir_all(staging).await.map_err(io)?;
    let total = tokio::fs::metadata(bundle)
        .await
        .map_err(|source| BundleError::Io {
            path: bundle.display().to_string(),
            source,
        })?
        .len();
    let (path, dir) = (bundle.to_path_buf(), staging.to_path_buf());
    let verified: VerifiedBundle = tokio::task::spawn_blocking(move || {
        // The bundle's bytes decompressed; the file's size is a fair total
        // for the bar, as crates hardly compress.
        let mut progress = Progress::new("import", total, Unit::Bytes);
        let result = read_and_verify(&path, &dir, &mut |read| progress.set(read.min(total)));
        progress.finish();
        result
    })
    .await
    .map_err(|e| ImportError::store("the bundle", e))??;

    let mut report = ImportReport::default();
    let store = state.stores.front();
    for (entry, staged) in verified.crates {
        let key = crate_key(&entry.name.to_ascii_lowercase(), &entry.vers);
        let what = format!("{} {}", entry.name, entry.vers);
        if store
            .get(&key)
            .await
            .map_err(|e| ImportError::store(&what, e))?
            .is_some()
        {
            report.crates_present += 1;
            continue;
        }
        let size = tokio::fs::metadata(&staged)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        store
            .commit(&key, &staged)
            .await
            .map_err(|e| ImportError::store(&what, e))?;
        report.crates += 1;
        report.crate_bytes += size;
    }

    let index = state.index_store().clone();
    let (files, new_versions) = tokio::task::spawn_blocking(move || {
        let mut new_versions = 0;
        let mut files = 0;
        for (key, body) in verified.index {
            let stored = index
                .load(&key)
                .map_err(|e| ImportError::store(format!("index file {key}"), e))?;
            let before = stored
                .as_ref()
                .map(|s| versions(&s.body))
                .unwrap_or_default();
            let merged = merge(stored.as_ref().map(|s| &s.body[..]), &body);
            new_versions += versions(&merged).difference(&before).count();
            let unchanged = stored.as_ref().is_some_and(|s| s.body[..] == merged[..]);
            if !unchanged {
                index
                    .save(&key, &record_of(merged.into()))
                    .map_err(|e| ImportError::store(format!("index file {key}"), e))?;
            }
            files += 1;
        }
        Ok::<_, ImportError>((files, new_versions))
    })
    .await
    .map_err(|e| ImportError::store("the index", e))??;
    report.index_files = files;
    report.new_versions = new_versions;
    state
        .flush()
        .map_err(|e| ImportError::store("the database", e))?;
    Ok(report)
}
