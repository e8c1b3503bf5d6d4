//! `MemoryCachedStore`: the most requested crate files kept in memory in front
//! of any other store, within a byte budget.
//!
//! CI farms fetch the same few hundred crates over and over. Served from memory,
//! such a hit needs no file open, no read into a fresh buffer and no trip to the
//! blocking pool (or, on S3, no GET to the bucket); the bench in
//! `benches/versus_nginx/` shows what that is worth against sendfile.
//!
//! Only what the wrapped store returned is cached, and stores only hold verified
//! files, so memory never holds anything that was not verified. Entries live at
//! most `TIME_TO_LIVE`, so a file that `verify` replaces on disk beside a
//! running mirror is read again soon, and a hot file is read from the local
//! store (which records the access for its LRU eviction) at least that often.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use moka::future::Cache;

use super::{CrateStore, ObjectInfo, StorageError, StoredObject};

/// How long a file stays in memory before it is read from the store again.
const TIME_TO_LIVE: Duration = Duration::from_secs(60);
/// The largest file kept, at most: bigger ones stream from the store, so one
/// huge crate cannot push out hundreds of small ones.
const MAX_ITEM: u64 = 4 << 20;

pub struct MemoryCachedStore {
    inner: Arc<dyn CrateStore>,
    cache: Cache<String, Bytes>,
    max_item: u64,
}

impl MemoryCachedStore {
    /// Wraps `inner` with a cache of `budget` bytes (files up to an eighth of
    /// the budget, and at most `MAX_ITEM`, are kept).
    pub fn new(inner: Arc<dyn CrateStore>, budget: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(budget)
            .weigher(|key: &String, bytes: &Bytes| {
                u32::try_from(key.len() + bytes.len() + 64).unwrap_or(u32::MAX)
            })
            .time_to_live(TIME_TO_LIVE)
            .build();
        Self {
            inner,
            cache,
            max_item: (budget / 8).min(MAX_ITEM),
        }
    }

    /// Files in memory and the bytes they take (as of the cache's last
    /// housekeeping, which runs every few requests).
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    fn from_memory(bytes: Bytes) -> StoredObject {
        StoredObject {
            len: bytes.len() as u64,
            body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            from_memory: true,
        }
    }
}

/// Reads a whole stored object into one buffer, refusing one whose length is
/// not the one the store announced (it changed while it was read): the client
/// then sees an error rather than a body of the wrong length.
async fn collect(key: &str, mut object: StoredObject) -> Result<Bytes, StorageError> {
    let mut buffer = BytesMut::with_capacity(object.len as usize);
    while let Some(chunk) = object.body.next().await {
        buffer.extend_from_slice(&chunk?);
        if buffer.len() as u64 > object.len {
            break;
        }
    }
    if buffer.len() as u64 != object.len {
        return Err(StorageError::Io(std::io::Error::other(format!(
            "{key} changed while it was read"
        ))));
    }
    Ok(buffer.freeze())
}

#[async_trait::async_trait]
impl CrateStore for MemoryCachedStore {
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StorageError> {
        if let Some(bytes) = self.cache.get(key).await {
            return Ok(Some(Self::from_memory(bytes)));
        }
        let Some(object) = self.inner.get(key).await? else {
            return Ok(None);
        };
        if object.len > self.max_item {
            return Ok(Some(object));
        }
        // Clients asking for the same file at once wait for one read of it
        // (the others' handles are dropped unread), so a burst of requests for
        // a file not yet in memory holds one copy, not one per client.
        let entry = self
            .cache
            .entry(key.to_string())
            .or_try_insert_with(collect(key, object))
            .await
            .map_err(|err| StorageError::Io(std::io::Error::other(err)))?;
        let from_memory = !entry.is_fresh();
        Ok(Some(StoredObject {
            from_memory,
            ..Self::from_memory(entry.into_value())
        }))
    }

    async fn commit(&self, key: &str, verified: &Path) -> Result<(), StorageError> {
        self.inner.commit(key, verified).await?;
        self.cache.invalidate(key).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.cache.invalidate(key).await;
        self.inner.delete(key).await
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list().await
    }

    /// Files in memory are served from memory, even by a store that could
    /// redirect: that is faster than any redirect.
    async fn redirect_url(&self, key: &str) -> Result<Option<String>, StorageError> {
        if self.cache.contains_key(key) {
            return Ok(None);
        }
        self.inner.redirect_url(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::LocalStore;

    /// A memory cache of `budget` bytes over a local store in a temp dir.
    struct Fixture {
        dir: tempfile::TempDir,
        store: MemoryCachedStore,
    }

    impl Fixture {
        fn new(budget: u64) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let local: Arc<dyn CrateStore> = Arc::new(LocalStore::new(dir.path()));
            let store = MemoryCachedStore::new(local, budget);
            Self { dir, store }
        }

        async fn commit(&self, key: &str, bytes: &[u8]) {
            let file = self.dir.path().join("verified");
            std::fs::write(&file, bytes).unwrap();
            self.store.commit(key, &file).await.unwrap();
        }

        /// The body of `key` and whether it came from memory.
        async fn read(&self, key: &str) -> (Vec<u8>, bool) {
            let object = self.store.get(key).await.unwrap().unwrap();
            let mut body = Vec::new();
            let mut stream = object.body;
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk.unwrap());
            }
            assert_eq!(body.len() as u64, object.len);
            (body, object.from_memory)
        }

        async fn files_in_memory(&self) -> u64 {
            self.store.cache.run_pending_tasks().await;
            self.store.usage().0
        }
    }

    #[tokio::test]
    async fn second_read_comes_from_memory_and_delete_forgets_it() {
        let fixture = Fixture::new(8 << 20);
        let key = "crates/3/a/abc/abc-1.0.0.crate";
        assert!(fixture.store.get(key).await.unwrap().is_none());
        fixture.commit(key, b"crate bytes").await;

        assert_eq!(fixture.read(key).await, (b"crate bytes".to_vec(), false));
        assert_eq!(fixture.read(key).await, (b"crate bytes".to_vec(), true));
        assert_eq!(fixture.files_in_memory().await, 1);

        fixture.store.delete(key).await.unwrap();
        assert!(fixture.store.get(key).await.unwrap().is_none());
        assert_eq!(fixture.files_in_memory().await, 0);
    }

    #[tokio::test]
    async fn files_over_the_item_limit_stay_on_disk() {
        // Budget 64 KiB: files over 8 KiB are not kept.
        let fixture = Fixture::new(64 << 10);
        let key = "crates/3/b/big/big-1.0.0.crate";
        fixture.commit(key, &[7u8; 9 << 10]).await;
        for _ in 0..2 {
            let (body, from_memory) = fixture.read(key).await;
            assert_eq!((body.len(), from_memory), (9 << 10, false));
        }
        assert_eq!(fixture.files_in_memory().await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_asking_at_once_share_one_read() {
        let fixture = Fixture::new(8 << 20);
        let key = "crates/3/d/def/def-1.0.0.crate";
        let bytes: Vec<u8> = (0..(600 << 10)).map(|i| (i % 253) as u8).collect();
        fixture.commit(key, &bytes).await;
        let reads = futures_util::future::join_all((0..16).map(|_| fixture.read(key))).await;
        assert!(reads.iter().all(|(body, _)| *body == bytes));
        let loaded = reads.iter().filter(|(_, from_memory)| !from_memory).count();
        assert_eq!(loaded, 1, "one read of the file, the rest from memory");
    }

    #[tokio::test]
    async fn a_commit_replaces_what_memory_holds() {
        let fixture = Fixture::new(8 << 20);
        let key = "crates/3/c/cde/cde-1.0.0.crate";
        fixture.commit(key, b"old").await;
        fixture.read(key).await;
        fixture.commit(key, b"new!").await;
        assert_eq!(fixture.read(key).await.0, b"new!");
    }
}
