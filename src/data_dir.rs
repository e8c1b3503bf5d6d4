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
    /// Opens sled (writing to disk every `flush_interval`; zero: only when
    /// asked), prepares the temporary dir (removing what a previous run
    /// left) and counts the stored index files. Blocking work runs off the
    /// async threads.
    ///
    /// The temporary dir is cleaned only once sled is open: sled's lock on
    /// its files is held by one process at a time, so a second process
    /// started on the same data dir (and refused there) never removes what
    /// the first one is writing.
    pub async fn open(root: &Path, flush_interval: Duration) -> Result<Self, StartError> {
        let root = root.to_path_buf();
        let tmp_dir = root.join("tmp");
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::DataDir { path, source }
        };
        let made = tmp_dir.clone();
        off_async(move || std::fs::create_dir_all(&made).map_err(dir_err(&made))).await?;
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
        let (removed, imports) = off_async(move || {
            let removed = crate::crates::clean_temp_dir(&tmp_dir).map_err(dir_err(&tmp_dir))?;
            let imports = clean_stale_imports(&tmp_dir).map_err(dir_err(&tmp_dir))?;
            Ok::<_, StartError>((removed, imports))
        })
        .await?;
        if removed > 0 {
            tracing::info!(removed, "removed unfinished downloads of a previous run");
        }
        if imports > 0 {
            tracing::info!(
                removed = imports,
                "removed what imports that did not finish had staged"
            );
        }
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

/// Removes `tmp/import-PID/` dirs (see `commands::import`) whose process is
/// gone: an import killed before it could remove its own. A live process's
/// dir stays (it cannot be using this data dir while we hold sled's lock,
/// but a dir is only ever removed for a process that is certainly gone).
/// Returns how many were removed.
fn clean_stale_imports(tmp_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(tmp_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("import-"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if entry.file_type()?.is_dir() && !process_alive(pid) {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether process `pid` exists (a zombie counts), from `/proc`. Without a
/// `/proc` to ask, only this process is known to be alive: sled's lock
/// already shuts other processes out of this data dir.
fn process_alive(pid: u32) -> bool {
    pid == std::process::id()
        || (Path::new("/proc/self").exists() && Path::new("/proc").join(pid.to_string()).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gone_processes_import_dirs_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        let dirs = [
            format!("import-{gone_pid}"),
            format!("import-{}", std::process::id()),
            "import-notapid".to_string(),
            "other".to_string(),
        ];
        for dir in &dirs {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
            std::fs::write(tmp.path().join(dir).join("0.crate"), b"x").unwrap();
        }
        assert_eq!(clean_stale_imports(tmp.path()).unwrap(), 1);
        assert!(!tmp.path().join(&dirs[0]).exists());
        for dir in &dirs[1..] {
            assert!(tmp.path().join(dir).join("0.crate").exists(), "{dir}");
        }
    }
}
