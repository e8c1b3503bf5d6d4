//! `LocalStore`: crate files on the local filesystem under `<data-dir>/crates`.
//! Commits are renames from the temp directory on the same filesystem, so a
//! reader sees the whole file or nothing.

use std::path::{Path, PathBuf};

use tokio_util::io::ReaderStream;

use super::{CrateStore, StorageError, StoredObject};

const READ_CHUNK: usize = 64 * 1024;

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// `root` is the data dir; keys (which start with `crates/`) resolve below it.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
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
        Ok(Some(StoredObject {
            len,
            body: Box::pin(ReaderStream::with_capacity(file, READ_CHUNK)),
        }))
    }

    async fn commit(&self, key: &str, verified: &Path) -> Result<(), StorageError> {
        let target = self.path_of(key);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(verified, &target).await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[tokio::test]
    async fn commit_get_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let key = "crates/1/a/a-1.0.0.crate";
        assert!(store.get(key).await.unwrap().is_none());
        let temp = dir.path().join("upload.part");
        std::fs::write(&temp, b"crate bytes").unwrap();
        store.commit(key, &temp).await.unwrap();
        assert!(!temp.exists());
        let object = store.get(key).await.unwrap().unwrap();
        assert_eq!(object.len, 11);
        let chunks: Vec<bytes::Bytes> = object.body.try_collect().await.unwrap();
        assert_eq!(chunks.concat(), b"crate bytes");
        store.delete(key).await.unwrap();
        store.delete(key).await.unwrap();
        assert!(store.get(key).await.unwrap().is_none());
    }
}
