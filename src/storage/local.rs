//! `LocalStore`: crate files on the local filesystem under `<data-dir>/crates`.
//! Commits are renames from the temp directory on the same filesystem, so a
//! reader sees the whole file or nothing.
//!
//! With accounting (a sled tree of access time and size per key) the store knows
//! its size and evicts the least recently used crates to stay under a quota.
//! Access times are written at most once per `ACCESS_WRITE_INTERVAL` per crate,
//! so a hot crate costs a memory read of sled per hit, not a write.
//!
//! The byte total and the file count are counters, read by `/api/stats` and
//! `/metrics` without touching sled: counted from the tree once when the store
//! is opened, then moved by exactly what each insert or removal in the tree
//! replaced (sled reports that atomically), so concurrent commits, deletions,
//! evictions and the reconcile pass never lose one another's changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use super::catalog::StoredCrateFile;
use super::{CrateStore, ObjectInfo, StorageError, StoredObject};

const READ_CHUNK: usize = 256 * 1024;
/// Crates up to this size are read in one go (most are; bigger ones would
/// hold too much memory per connection).
const WHOLE_READ_LIMIT: u64 = 512 << 10;
/// Access times finer than this do not change which crate is least recently used.
const ACCESS_WRITE_INTERVAL_MS: u64 = 1_000;
/// How often the eviction task checks the quota without being woken.
const EVICTION_PERIOD: Duration = Duration::from_secs(30);

pub struct LocalStore {
    root: PathBuf,
    accounting: Option<Accounting>,
}

/// Sizes and access times of stored crates, and the quota.
struct Accounting {
    tree: sled::Tree,
    /// Sum of the sizes in `tree`.
    total: AtomicU64,
    /// Entries in `tree`.
    objects: AtomicU64,
    max_bytes: Option<u64>,
    over_quota: Notify,
}

/// What one eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EvictionReport {
    pub evicted: u64,
    pub freed_bytes: u64,
    pub remaining_bytes: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode(access_ms: u64, size: u64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&access_ms.to_be_bytes());
    value[8..].copy_from_slice(&size.to_be_bytes());
    value
}

fn decode(value: &[u8]) -> Option<(u64, u64)> {
    let access = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let size = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((access, size))
}

impl LocalStore {
    /// A store without accounting (for tools that only read and delete).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            accounting: None,
        }
    }

    /// A store that tracks sizes and access times in `tree` and, with a quota,
    /// evicts. Counts what `tree` holds (one walk of it: blocking); call
    /// [`LocalStore::reconcile`] to bring it in line with the files on disk.
    pub fn with_accounting(
        root: impl Into<PathBuf>,
        tree: sled::Tree,
        max_bytes: Option<u64>,
    ) -> Result<Self, StorageError> {
        let (mut total, mut objects) = (0u64, 0u64);
        for entry in tree.iter().values() {
            objects += 1;
            total += decode(&entry?).map_or(0, |(_, size)| size);
        }
        Ok(Self {
            root: root.into(),
            accounting: Some(Accounting {
                tree,
                total: AtomicU64::new(total),
                objects: AtomicU64::new(objects),
                max_bytes,
                over_quota: Notify::new(),
            }),
        })
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Bytes stored, when accounting is on.
    pub fn total_bytes(&self) -> Option<u64> {
        self.accounting
            .as_ref()
            .map(|a| a.total.load(Ordering::Relaxed))
    }

    /// Crate files stored, when accounting is on.
    pub fn objects(&self) -> Option<u64> {
        self.accounting
            .as_ref()
            .map(|a| a.objects.load(Ordering::Relaxed))
    }

    pub fn max_bytes(&self) -> Option<u64> {
        self.accounting.as_ref().and_then(|a| a.max_bytes)
    }

    /// Brings the accounting in line with the files on disk (files added or
    /// removed behind the mirror's back, or by a crash); returns the bytes on
    /// disk. Blocking: walks the whole store. Safe while the store serves:
    /// entries are replaced or removed only if unchanged since they were read
    /// (a commit meanwhile wins), and the counters move by what changed.
    pub fn reconcile(&self) -> Result<u64, StorageError> {
        self.reconcile_until(&CancellationToken::new())
    }

    /// As `reconcile`, writing nothing more once `stop` is cancelled (what
    /// is left undone is done by the next start's pass).
    fn reconcile_until(&self, stop: &CancellationToken) -> Result<u64, StorageError> {
        let Some(accounting) = &self.accounting else {
            return Ok(0);
        };
        // Read before the walk: an entry that changes after this was written by
        // a commit whose file the walk may have missed, and is left alone.
        let before: Vec<(sled::IVec, sled::IVec)> =
            accounting.tree.iter().collect::<Result<_, _>>()?;
        let files = walk(&self.root)?;
        let total = files.iter().map(|info| info.size).sum();
        let mut on_disk = std::collections::HashSet::with_capacity(files.len());
        for info in files {
            if stop.is_cancelled() {
                return Ok(total);
            }
            let seen = accounting.tree.get(&info.key)?;
            let known = seen
                .as_ref()
                .and_then(|v| decode(v))
                .is_some_and(|(_, size)| size == info.size);
            if !known {
                let value = encode(now_ms(), info.size);
                let swapped = accounting.tree.compare_and_swap(
                    info.key.as_str(),
                    seen.as_ref(),
                    Some(&value[..]),
                )?;
                if swapped.is_ok() {
                    accounting.counted(seen.as_deref(), Some(info.size));
                }
            }
            on_disk.insert(info.key);
        }
        for (key, value) in before {
            if stop.is_cancelled() {
                break;
            }
            if !on_disk.contains(String::from_utf8_lossy(&key).as_ref()) {
                let removed =
                    accounting
                        .tree
                        .compare_and_swap(&key, Some(&value), None::<&[u8]>)?;
                if removed.is_ok() {
                    accounting.counted(Some(&value), None);
                }
            }
        }
        Ok(total)
    }

    /// Evicts least recently used crates until the store is at most 90% of its
    /// quota (so that eviction does not run after every download). Blocking.
    pub fn evict(&self) -> Result<EvictionReport, StorageError> {
        self.evict_until(&CancellationToken::new())
    }

    /// As `evict`, removing nothing more once `stop` is cancelled.
    fn evict_until(&self, stop: &CancellationToken) -> Result<EvictionReport, StorageError> {
        let mut report = EvictionReport::default();
        let Some(accounting) = &self.accounting else {
            return Ok(report);
        };
        let total = || accounting.total.load(Ordering::Relaxed);
        let Some(max) = accounting.max_bytes else {
            report.remaining_bytes = total();
            return Ok(report);
        };
        if total() > max {
            let target = max - max / 10;
            let mut entries = Vec::new();
            for entry in accounting.tree.iter() {
                let (key, value) = entry?;
                if let Some((access, size)) = decode(&value) {
                    entries.push((access, String::from_utf8_lossy(&key).into_owned(), size));
                }
            }
            entries.sort();
            for (_, key, size) in entries {
                if total() <= target || stop.is_cancelled() {
                    break;
                }
                match std::fs::remove_file(self.path_of(&key)) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err.into())
                    }
                    _ => {}
                }
                let removed = accounting.tree.remove(key.as_str())?;
                accounting.counted(removed.as_deref(), None);
                report.evicted += 1;
                report.freed_bytes += size;
            }
        }
        report.remaining_bytes = total();
        Ok(report)
    }

    /// Keeps the store under its quota: reconciles once, then evicts whenever a
    /// commit goes over the quota, and periodically, until `stop` is
    /// cancelled.
    pub async fn run_eviction(
        self: Arc<Self>,
        stop: CancellationToken,
        metrics: Arc<crate::metrics::Metrics>,
    ) {
        let Some(accounting) = &self.accounting else {
            return;
        };
        // The blocking passes are not raced against `stop` (they would run on
        // unseen): they watch it themselves and write nothing once it is
        // cancelled, and whoever stops this task waits for them.
        let (store, passes) = (self.clone(), stop.clone());
        match tokio::task::spawn_blocking(move || store.reconcile_until(&passes)).await {
            Ok(Ok(total)) => tracing::info!(bytes = total, "local storage reconciled"),
            Ok(Err(err)) => tracing::error!(error = %err, "local storage reconcile failed"),
            Err(err) => tracing::error!(error = %err, "local storage reconcile panicked"),
        }
        if accounting.max_bytes.is_none() {
            return;
        }
        while !stop.is_cancelled() {
            let (store, passes) = (self.clone(), stop.clone());
            let storage = &metrics.storage;
            match tokio::task::spawn_blocking(move || store.evict_until(&passes)).await {
                Ok(Ok(report)) if report.evicted > 0 => {
                    storage.evicted.inc_by(report.evicted);
                    storage.evicted_bytes.inc_by(report.freed_bytes);
                    tracing::info!(
                        evicted = report.evicted,
                        freed_bytes = report.freed_bytes,
                        remaining_bytes = report.remaining_bytes,
                        "evicted least recently used crates"
                    )
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    storage.eviction_failures.inc();
                    tracing::error!(error = %err, "eviction failed")
                }
                Err(err) => {
                    storage.eviction_failures.inc();
                    tracing::error!(error = %err, "eviction panicked")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tokio::time::timeout(EVICTION_PERIOD, accounting.over_quota.notified()) => {}
            }
        }
    }

    /// The stored crate files whose key `keep` accepts, with sizes and last
    /// access times, from the accounting (nothing on disk is walked; empty
    /// without accounting). Blocking: one pass over the tree.
    pub fn crate_files(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<StoredCrateFile>, StorageError> {
        let Some(accounting) = &self.accounting else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        for entry in accounting.tree.iter() {
            let (key, value) = entry?;
            let Ok(key) = std::str::from_utf8(&key) else {
                continue;
            };
            if !keep(key) {
                continue;
            }
            if let Some((access, size)) = decode(&value) {
                files.push(StoredCrateFile {
                    key: key.to_string(),
                    size,
                    last_access_ms: Some(access),
                });
            }
        }
        Ok(files)
    }

    /// Records a read of `key`, cheaply: only when the recorded time is stale.
    fn touch(&self, key: &str) -> Result<(), StorageError> {
        let Some(accounting) = &self.accounting else {
            return Ok(());
        };
        let now = now_ms();
        let Some(seen) = accounting.tree.get(key)? else {
            return Ok(());
        };
        if let Some((access, size)) = decode(&seen) {
            if now.saturating_sub(access) >= ACCESS_WRITE_INTERVAL_MS {
                // Only over the entry just read: a deletion or commit since
                // then wins (a plain insert would bring back a deleted key).
                let _ = accounting.tree.compare_and_swap(
                    key,
                    Some(&seen),
                    Some(&encode(now, size)[..]),
                )?;
            }
        }
        Ok(())
    }

    fn record_commit(&self, key: &str, size: u64) -> Result<(), StorageError> {
        let Some(accounting) = &self.accounting else {
            return Ok(());
        };
        let previous = accounting.tree.insert(key, &encode(now_ms(), size))?;
        let total = accounting.counted(previous.as_deref(), Some(size));
        if accounting.max_bytes.is_some_and(|max| total > max) {
            accounting.over_quota.notify_one();
        }
        Ok(())
    }
}

impl Accounting {
    /// Moves the counters by one change of the tree: the entry `replaced`
    /// (sled's answer to the write) became `size` (`None`: removed). Returns
    /// the new byte total.
    fn counted(&self, replaced: Option<&[u8]>, size: Option<u64>) -> u64 {
        let old = replaced.map(|v| decode(v).map_or(0, |(_, s)| s));
        match (old, size) {
            (None, Some(_)) => self.objects.fetch_add(1, Ordering::Relaxed),
            (Some(_), None) => self.objects.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        // Wrapping: a removal racing the insert of the same key may count
        // before it, and the sum comes out right once both have counted.
        let (add, sub) = (size.unwrap_or(0), old.unwrap_or(0));
        let total = self
            .total
            .fetch_add(add, Ordering::Relaxed)
            .wrapping_add(add);
        self.total.fetch_sub(sub, Ordering::Relaxed);
        total.wrapping_sub(sub)
    }
}

/// Every crate file below `root/crates`, with keys relative to `root`.
fn walk(root: &Path) -> std::io::Result<Vec<ObjectInfo>> {
    let mut found = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "crate") {
                if let Ok(relative) = path.strip_prefix(root) {
                    found.push(ObjectInfo {
                        key: relative.to_string_lossy().into_owned(),
                        size: entry.metadata()?.len(),
                    });
                }
            }
        }
    }
    Ok(found)
}

#[async_trait::async_trait]
impl CrateStore for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StorageError> {
        let file = match tokio::fs::File::open(self.path_of(key)).await {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let len = file.metadata().await?.len();
        self.touch(key)?;
        // Most crates are small: one read (one trip to the blocking pool)
        // instead of one per chunk. Large ones stream in big chunks.
        let body: super::ByteStream = if len <= WHOLE_READ_LIMIT {
            let mut file = file.into_std().await;
            let bytes = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::with_capacity(len as usize);
                std::io::Read::read_to_end(&mut file, &mut bytes).map(|_| bytes)
            })
            .await
            .map_err(std::io::Error::other)??;
            Box::pin(futures_util::stream::once(async move {
                Ok(bytes::Bytes::from(bytes))
            }))
        } else {
            Box::pin(ReaderStream::with_capacity(file, READ_CHUNK))
        };
        Ok(Some(StoredObject {
            len,
            body,
            from_memory: false,
        }))
    }

    async fn commit(&self, key: &str, verified: &Path) -> Result<(), StorageError> {
        let target = self.path_of(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let size = tokio::fs::metadata(verified).await?.len();
        tokio::fs::rename(verified, &target).await?;
        self.record_commit(key, size)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
            _ => {}
        }
        if let Some(accounting) = &self.accounting {
            let removed = accounting.tree.remove(key)?;
            accounting.counted(removed.as_deref(), None);
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        let root = self.root.clone();
        Ok(tokio::task::spawn_blocking(move || walk(&root))
            .await
            .map_err(std::io::Error::other)??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    async fn put(store: &LocalStore, dir: &Path, key: &str, bytes: &[u8]) {
        let temp = dir.join("upload.part");
        std::fs::write(&temp, bytes).unwrap();
        store.commit(key, &temp).await.unwrap();
        assert!(!temp.exists());
    }

    #[tokio::test]
    async fn commit_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = "crates/1/a/a-1.0.0.crate";
        assert!(store.get(key).await.unwrap().is_none());
        put(&store, dir.path(), key, b"crate bytes").await;
        let object = store.get(key).await.unwrap().unwrap();
        assert_eq!(object.len, 11);
        let chunks: Vec<bytes::Bytes> = object.body.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), b"crate bytes");
        assert_eq!(
            store.list().await.unwrap(),
            vec![ObjectInfo {
                key: key.to_string(),
                size: 11
            }]
        );
        store.delete(key).await.unwrap();
        store.delete(key).await.unwrap();
        assert!(store.get(key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn least_recently_used_crates_are_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store =
            LocalStore::with_accounting(dir.path(), db.open_tree("access").unwrap(), Some(350))
                .unwrap();
        let key = |n: u32| format!("crates/1/a/a-{n}.0.0.crate");
        for n in 1..=3 {
            put(&store, dir.path(), &key(n), &[n as u8; 100]).await;
        }
        assert_eq!(store.total_bytes(), Some(300));
        // Make crate 1 the most recently used.
        tokio::time::sleep(Duration::from_millis(ACCESS_WRITE_INTERVAL_MS + 50)).await;
        assert!(store.get(&key(1)).await.unwrap().is_some());
        put(&store, dir.path(), &key(4), &[4; 100]).await;
        assert_eq!(store.total_bytes(), Some(400));
        let report = store.evict().unwrap();
        assert_eq!(report.evicted, 1);
        assert_eq!(report.remaining_bytes, 300);
        assert!(
            store.get(&key(2)).await.unwrap().is_none(),
            "the LRU crate survived"
        );
        for n in [1, 3, 4] {
            assert!(
                store.get(&key(n)).await.unwrap().is_some(),
                "crate {n} was evicted"
            );
        }
    }

    #[tokio::test]
    async fn counters_follow_commits_replacements_deletions_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let open = || {
            LocalStore::with_accounting(dir.path(), db.open_tree("access").unwrap(), None).unwrap()
        };
        let store = open();
        let key = |n: u32| format!("crates/1/a/a-{n}.0.0.crate");
        put(&store, dir.path(), &key(1), &[1; 100]).await;
        put(&store, dir.path(), &key(2), &[2; 30]).await;
        put(&store, dir.path(), &key(1), &[1; 70]).await;
        assert_eq!((store.objects(), store.total_bytes()), (Some(2), Some(100)));
        store.delete(&key(2)).await.unwrap();
        store.delete(&key(2)).await.unwrap();
        assert_eq!((store.objects(), store.total_bytes()), (Some(1), Some(70)));
        // A file added behind the store's back, then found by reconcile.
        let extra = dir.path().join(key(3));
        std::fs::write(&extra, [3; 5]).unwrap();
        assert_eq!(store.reconcile().unwrap(), 75);
        assert_eq!((store.objects(), store.total_bytes()), (Some(2), Some(75)));
        let reopened = open();
        assert_eq!(
            (reopened.objects(), reopened.total_bytes()),
            (Some(2), Some(75))
        );
        // The listing comes from the same accounting, with access times.
        let listed = reopened.crate_files(|key| key.contains("a-1.")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].key.as_str(), listed[0].size),
            (key(1).as_str(), 70)
        );
        assert!(listed[0].last_access_ms.is_some_and(|ms| ms > 0));
        assert_eq!(reopened.crate_files(|_| true).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn stopped_passes_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("access").unwrap();
        let store = LocalStore::with_accounting(dir.path(), tree.clone(), Some(10)).unwrap();
        put(&store, dir.path(), "crates/1/a/a-1.0.0.crate", &[1; 100]).await;
        let behind = dir.path().join("crates/1/b/b-1.0.0.crate");
        std::fs::create_dir_all(behind.parent().unwrap()).unwrap();
        std::fs::write(&behind, [2; 5]).unwrap();
        let stopped = CancellationToken::new();
        stopped.cancel();
        assert_eq!(store.evict_until(&stopped).unwrap().evicted, 0);
        store.reconcile_until(&stopped).unwrap();
        assert_eq!(tree.len(), 1, "a stopped reconcile recorded a file");
        assert_eq!((store.objects(), store.total_bytes()), (Some(1), Some(100)));
        // Not stopped, the same passes do their work.
        store.reconcile().unwrap();
        assert_eq!(store.objects(), Some(2));
        assert_eq!(store.evict().unwrap().evicted, 1);
    }

    #[tokio::test]
    async fn reconcile_counts_files_added_behind_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let store =
            LocalStore::with_accounting(dir.path(), db.open_tree("access").unwrap(), None).unwrap();
        let path = dir.path().join("crates/2/ab/ab-1.0.0.crate");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, [0u8; 42]).unwrap();
        assert_eq!(store.reconcile().unwrap(), 42);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.reconcile().unwrap(), 0);
        assert!(db.open_tree("access").unwrap().is_empty());
    }
}
