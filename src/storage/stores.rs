//! The crate stores of one mirror, opened from the settings: the backend
//! (local or S3), the memory in front of it, and the figures they keep.

use std::sync::Arc;

use super::catalog::{self, CratePage, Search, StoredCrateFile};
use super::local::LocalStore;
use super::memory::MemoryCachedStore;
use super::s3::S3Store;
use super::{CrateStore, StorageError};
use crate::blocking::off_async;
use crate::config::StorageConfig;
use crate::data_dir::DataDir;
use crate::StartError;

/// The opened stores. The backends are kept by their own type beside the
/// store the download path uses, for what only they do.
pub struct Stores {
    /// What the download path reads and writes: the memory, if any, in front
    /// of the backend.
    front: Arc<dyn CrateStore>,
    /// The local backend, when in use: it runs the quota's eviction task.
    local: Option<Arc<LocalStore>>,
    /// The memory in front of the backend, when `crate-cache-size` is not 0.
    memory: Option<Arc<MemoryCachedStore>>,
    /// The S3 backend, when in use: readiness checks that its bucket answers.
    s3: Option<Arc<S3Store>>,
}

/// What the stores hold, from their counters (nothing is walked). `None`
/// where the backend does not count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StorageFigures {
    pub backend: &'static str,
    pub bytes: Option<u64>,
    pub objects: Option<u64>,
    pub quota_bytes: Option<u64>,
    pub memory_files: Option<u64>,
    pub memory_bytes: Option<u64>,
}

impl Stores {
    /// Opens the backend the settings name and the memory in front of it
    /// (`memory_bytes` 0: none).
    pub async fn open(
        config: &StorageConfig,
        memory_bytes: u64,
        data: &DataDir,
    ) -> Result<Self, StartError> {
        let (backend, local, s3): (Arc<dyn CrateStore>, _, _) = match config {
            StorageConfig::Local { max_bytes } => {
                let tree = data.tree("crate_access")?;
                // Counts the stored crates: a one-time walk of the tree.
                let (root, max_bytes) = (data.root().to_path_buf(), *max_bytes);
                let local =
                    off_async(move || LocalStore::with_accounting(root, tree, max_bytes)).await?;
                let local = Arc::new(local);
                (local.clone(), Some(local), None)
            }
            StorageConfig::S3(s3) => {
                let s3 = Arc::new(S3Store::new(s3)?);
                // Wrong keys or an unreachable bucket do not stop the start (the
                // bucket may come back); /ready reports it until then.
                if let Err(reason) = s3.check().await {
                    tracing::warn!(%reason, "the S3 bucket does not answer; not ready until it does");
                }
                (s3.clone(), None, Some(s3))
            }
        };
        let memory = (memory_bytes > 0)
            .then(|| Arc::new(MemoryCachedStore::new(backend.clone(), memory_bytes)));
        let front: Arc<dyn CrateStore> = match &memory {
            Some(memory) => memory.clone(),
            None => backend,
        };
        Ok(Self {
            front,
            local,
            memory,
            s3,
        })
    }

    /// The store the download path uses.
    pub fn front(&self) -> Arc<dyn CrateStore> {
        self.front.clone()
    }

    /// The local backend, when in use.
    pub fn local(&self) -> Option<&Arc<LocalStore>> {
        self.local.as_ref()
    }

    /// The S3 backend, when in use.
    pub fn s3(&self) -> Option<&Arc<S3Store>> {
        self.s3.as_ref()
    }

    /// Page `page` of the stored crates that match `search` (see
    /// `catalog`). The local store's accounting is read and the page built on
    /// the blocking pool; S3 is listed (no access times there).
    pub async fn cached_crates(
        &self,
        search: Search,
        page: usize,
    ) -> Result<CratePage, StorageError> {
        if let Some(local) = self.local.clone() {
            return off_async(move || {
                let files = local.crate_files(|key| search.matches_key(key))?;
                Ok(catalog::page(files, &search, page))
            })
            .await;
        }
        let listed = match &self.s3 {
            Some(s3) => s3.list().await?,
            None => self.front.list().await?,
        };
        off_async(move || {
            let files = listed
                .into_iter()
                .filter(|object| search.matches_key(&object.key))
                .map(|object| StoredCrateFile {
                    key: object.key,
                    size: object.size,
                    last_access_ms: None,
                });
            Ok(catalog::page(files, &search, page))
        })
        .await
    }

    pub fn figures(&self) -> StorageFigures {
        let local = self.local.as_ref();
        let memory = self.memory.as_ref().map(|m| m.usage());
        StorageFigures {
            backend: if self.s3.is_some() { "s3" } else { "local" },
            bytes: local.and_then(|s| s.total_bytes()),
            objects: local.and_then(|s| s.objects()),
            quota_bytes: local.and_then(|s| s.max_bytes()),
            memory_files: memory.map(|(files, _)| files),
            memory_bytes: memory.map(|(_, bytes)| bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_figures_come_from_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path(), std::time::Duration::ZERO)
            .await
            .unwrap();
        let config = StorageConfig::Local {
            max_bytes: Some(1000),
        };
        let stores = Stores::open(&config, 4096, &data).await.unwrap();
        assert!(stores.local().is_some() && stores.s3().is_none());
        let expected = StorageFigures {
            backend: "local",
            bytes: Some(0),
            objects: Some(0),
            quota_bytes: Some(1000),
            memory_files: Some(0),
            memory_bytes: Some(0),
        };
        assert_eq!(stores.figures(), expected);
        drop(stores);
        // Without memory in front, there is no memory to count.
        let stores = Stores::open(&config, 0, &data).await.unwrap();
        let figures = stores.figures();
        assert_eq!((figures.memory_files, figures.memory_bytes), (None, None));
        assert_eq!(figures.quota_bytes, Some(1000));
    }
}
