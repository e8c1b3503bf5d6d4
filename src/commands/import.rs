//! `crate-mirror import FILE`: a bundle into a data dir (and its local or S3
//! storage), for a mirror that then serves it, `--offline` on a site with no
//! upstream. All of the bundle is checked before anything is written (see
//! `bundle::read`), and so is all of it against what the site has: a version
//! the site has (an index line in its index, or a stored `.crate`) keeps its
//! line and its bytes, a bundle may only change whether it is yanked
//! (`bundle::index_lines::merge`). Then `.crate` files go in first and index
//! files after, so no index file ever names a crate that is not there. Index
//! files merge with what is stored by version, never losing one; a crate
//! already stored is left as it is. Importing the same bundle twice changes
//! nothing.
//!
//! The bundle is staged in `tmp/import-PID/`, removed when the import ends;
//! one a killed import left is removed when the data dir is next opened
//! (`data_dir`).

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::progress::{Progress, Unit};
use crate::bundle::index_lines::{merge, Added, MergeError};
use crate::bundle::read::{read_and_verify, ImportLimits, VerifiedBundle};
use crate::bundle::{human_bytes, BundleError};
use crate::index::cache::record_of;
use crate::index::store::IndexStore;
use crate::storage::{crate_key, CrateStore};
use crate::AppState;

/// Stored crates checked at a time against a bundle's new lines (a request
/// each with S3).
const STORE_CHECKS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The bundle failed a check: nothing was imported. Its message is the
    /// whole story, so it is no `source` (that would print its cause twice).
    #[error("{0}; nothing was imported")]
    Bundle(BundleError),
    /// The bundle would change a version the site has: nothing was imported.
    #[error("{0}; nothing was imported")]
    Conflict(MergeError),
    /// A crate is stored for a version the bundle brings a line for, and the
    /// line does not vouch for it: nothing was imported.
    #[error(
        "{name} {vers} is already on this site: its stored crate's sha256 is {stored}, \
         the bundle's index line says {cksum}; an import never changes a published version; \
         nothing was imported"
    )]
    StoredDiffers {
        name: String,
        vers: String,
        stored: String,
        cksum: String,
    },
    #[error("while storing {what}: {reason}")]
    Store { what: String, reason: String },
}

impl From<BundleError> for ImportError {
    fn from(err: BundleError) -> Self {
        ImportError::Bundle(err)
    }
}

impl From<MergeError> for ImportError {
    fn from(err: MergeError) -> Self {
        ImportError::Conflict(err)
    }
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

/// Whether `bundle` can be read at all, checked before the data dir is
/// opened: a mistyped path must not leave a new, empty data dir behind.
pub fn check_readable(bundle: &Path) -> Result<(), ImportError> {
    let io = |source| BundleError::Io {
        path: bundle.display().to_string(),
        source,
    };
    let file = std::fs::File::open(bundle).map_err(io)?;
    if file.metadata().map_err(io)?.is_dir() {
        return Err(io(std::io::Error::from(std::io::ErrorKind::IsADirectory)).into());
    }
    Ok(())
}

/// Imports `bundle` into `state`'s data dir and storage, within `limits`.
pub async fn import(
    state: &AppState,
    bundle: &Path,
    limits: ImportLimits,
) -> Result<ImportReport, ImportError> {
    let staging = state
        .tmp_dir()
        .join(format!("import-{}", std::process::id()));
    // A dir of this name is an earlier process's that had this PID: nothing
    // in it is ours.
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let result = import_staged(state, bundle, &staging, limits).await;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    result
}

/// The staged index file `staged` merged with what `index` stores for `key`,
/// and whether that changes what is stored.
fn merge_staged(
    index: &IndexStore,
    key: &str,
    staged: &Path,
) -> Result<(crate::bundle::index_lines::Merged, bool), ImportError> {
    let what = || format!("index file {key}");
    let incoming = std::fs::read(staged).map_err(|e| ImportError::store(what(), e))?;
    let stored = index.load(key).map_err(|e| ImportError::store(what(), e))?;
    let merged = merge(key, stored.as_ref().map(|s| &s.body[..]), &incoming)?;
    let changed = stored.is_none_or(|s| s.body[..] != merged.body[..]);
    Ok((merged, changed))
}

/// The sha256 of what `store` holds at `key`, if anything.
async fn stored_sha256(store: &dyn CrateStore, key: &str) -> Result<Option<String>, ImportError> {
    let Some(mut object) = store
        .get(key)
        .await
        .map_err(|e| ImportError::store(key, e))?
    else {
        return Ok(None);
    };
    let mut hasher = Sha256::new();
    while let Some(chunk) = object.body.next().await {
        hasher.update(chunk.map_err(|e| ImportError::store(key, e))?);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Checks each line the site lacks against a crate stored for its version
/// (left by an import killed before its index files were written, or kept
/// after the upstream dropped the crate's index file): the line must vouch
/// for the stored bytes.
async fn check_stored(
    store: &dyn CrateStore,
    key: &str,
    added: Vec<Added>,
) -> Result<(), ImportError> {
    let mut checks = futures_util::stream::iter(added)
        .map(|line| async move {
            let stored = stored_sha256(store, &crate_key(key, &line.vers)).await?;
            match stored {
                Some(stored) if stored != line.cksum => Err(ImportError::StoredDiffers {
                    name: line.name,
                    vers: line.vers,
                    stored,
                    cksum: line.cksum,
                }),
                _ => Ok(()),
            }
        })
        .buffer_unordered(STORE_CHECKS);
    while let Some(checked) = checks.next().await {
        checked?;
    }
    Ok(())
}

async fn import_staged(
    state: &AppState,
    bundle: &Path,
    staging: &Path,
    limits: ImportLimits,
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
        let result = read_and_verify(&path, &dir, &limits, &mut |read| {
            progress.set(read.min(total))
        });
        progress.finish();
        result
    })
    .await
    .map_err(|e| ImportError::store("the bundle", e))??;

    // Against the site, one index file at a time, before anything is
    // written: a version it has keeps its line (yanked aside) and its bytes.
    let store = state.stores.front();
    let index = state.index_store().clone();
    let index_files: Vec<(String, PathBuf)> = verified.index.into_iter().collect();
    for (key, staged) in &index_files {
        let (index, owned, staged) = (index.clone(), key.clone(), staged.clone());
        let (merged, _) =
            tokio::task::spawn_blocking(move || merge_staged(&index, &owned, &staged))
                .await
                .map_err(|e| ImportError::store("the index", e))??;
        check_stored(store.as_ref(), key, merged.added).await?;
    }

    let mut report = ImportReport::default();
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

    let (files, new_versions) = tokio::task::spawn_blocking(move || {
        let mut new_versions = 0;
        for (key, staged) in &index_files {
            let (merged, changed) = merge_staged(&index, key, staged)?;
            new_versions += merged.added.len();
            if changed {
                index
                    .save(key, &record_of(merged.body.into()))
                    .map_err(|e| ImportError::store(format!("index file {key}"), e))?;
            }
        }
        Ok::<_, ImportError>((index_files.len(), new_versions))
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
