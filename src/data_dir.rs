//! What the mirror keeps in its data dir besides crate files: the temporary
//! dir of unfinished downloads, the sled database and the index store in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::blocking::off_async;
use crate::index::store::IndexStore;
use crate::StartError;

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 32 << 20;

/// The opened data dir.
pub struct DataDir {
    root: PathBuf,
    db: sled::Db,
    index_store: IndexStore,
}

impl DataDir {
    /// Prepares the temporary dir (removing what a previous run left), opens
    /// sled (writing to disk every `flush_interval`; zero: only when asked)
    /// and counts the stored index files. Blocking work runs off the async
    /// threads.
    pub async fn open(root: &Path, flush_interval: Duration) -> Result<Self, StartError> {
        let root = root.to_path_buf();
        let tmp_dir = root.join("tmp");
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::DataDir { path, source }
        };
        let removed = off_async(move || {
            std::fs::create_dir_all(&tmp_dir).map_err(dir_err(&tmp_dir))?;
            crate::crates::clean_temp_dir(&tmp_dir).map_err(dir_err(&tmp_dir))
        })
        .await?;
        if removed > 0 {
            tracing::info!(removed, "removed unfinished downloads of a previous run");
        }
        let db_path = root.join("sled");
        // sled keeps a page cache of 1 GiB by default; bound it, since the hot
        // index files are in the (separately bounded) moka cache anyway.
        let db = {
            let flush_every = u64::try_from(flush_interval.as_millis())
                .ok()
                .filter(|ms| *ms > 0);
            let config = sled::Config::new()
                .path(&db_path)
                .cache_capacity(SLED_CACHE_BYTES)
                .flush_every_ms(flush_every);
            off_async(move || config.open()).await
        }
        .map_err(|source| StartError::database(db_path.clone(), source))?;
        // Counts the stored index files: a one-time walk of the tree.
        let index_db = db.clone();
        let index_store = off_async(move || IndexStore::open(&index_db))
            .await
            .map_err(|source| StartError::IndexStore {
                path: db_path,
                source,
            })?;
        Ok(Self {
            root,
            db,
            index_store,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where downloads are written until they are complete.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    pub fn index_store(&self) -> &IndexStore {
        &self.index_store
    }

    /// A named tree of the database.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StartError> {
        self.db
            .open_tree(name)
            .map_err(|source| StartError::database(self.root.join("sled"), source))
    }

    /// Writes what sled holds in memory to disk.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
    }
}
