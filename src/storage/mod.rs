//! Where `.crate` files live: the `CrateStore` trait, one implementation per
//! backend. A store only ever receives files that were already verified, so
//! nothing partial or unverified is readable under a final key.

pub mod catalog;
pub mod local;
pub mod memory;
pub mod s3;
pub mod stores;

use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::index::path::prefix;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("object storage: {0}")]
    Object(#[from] object_store::Error),
    #[error("storage accounting: {0}")]
    Accounting(#[from] sled::Error),
    /// The settings cannot work (e.g. S3 without any way to get credentials).
    #[error("{0}")]
    Settings(String),
}

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A stored object being read.
pub struct StoredObject {
    pub len: u64,
    pub body: ByteStream,
    /// Served from the in-memory cache of hot files (`memory::MemoryCachedStore`).
    pub from_memory: bool,
}

#[async_trait::async_trait]
pub trait CrateStore: Send + Sync {
    /// Opens `key` for reading, or `None` when it is not stored.
    async fn get(&self, key: &str) -> Result<Option<StoredObject>, StorageError>;
    /// Makes the verified local file `verified` visible under `key`, atomically;
    /// the file is consumed.
    async fn commit(&self, key: &str, verified: &Path) -> Result<(), StorageError>;
    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Every stored crate object.
    async fn list(&self) -> Result<Vec<ObjectInfo>, StorageError>;
    /// A URL from which a client may fetch `key` directly, when the backend
    /// offers one and `key` is stored.
    async fn redirect_url(&self, _key: &str) -> Result<Option<String>, StorageError> {
        Ok(None)
    }
}

/// The storage key of a crate version: `crates/{prefix}/{name}/{name}-{version}.crate`,
/// with the lowercased name, the same for every backend.
pub fn crate_key(name_key: &str, version: &str) -> String {
    format!(
        "crates/{}/{name_key}/{name_key}-{version}.crate",
        prefix(name_key)
    )
}

/// The crate name (lowercased) and version of a storage key, or `None` for a
/// key that is not a crate object.
pub fn parse_crate_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("crates/")?;
    let (dirs, file) = rest.rsplit_once('/')?;
    let (prefix_dirs, name) = dirs.rsplit_once('/')?;
    let version = file
        .strip_prefix(name)?
        .strip_prefix('-')?
        .strip_suffix(".crate")?;
    (prefix_dirs == prefix(name) && !version.is_empty())
        .then(|| (name.to_string(), version.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_parse_back() {
        for (name, version) in [
            ("serde", "1.0.0"),
            ("a", "0.1.0+b"),
            ("dash-name", "1.0.0-rc.1"),
        ] {
            let key = super::crate_key(name, version);
            assert_eq!(
                super::parse_crate_key(&key),
                Some((name.to_string(), version.to_string()))
            );
        }
        assert_eq!(
            super::parse_crate_key("crates/se/rd/serde/other-1.0.0.crate"),
            None
        );
        assert_eq!(
            super::parse_crate_key("crates/xx/rd/serde/serde-1.0.0.crate"),
            None
        );
        assert_eq!(super::parse_crate_key("tmp/x.part"), None);
    }

    #[test]
    fn keys_use_the_index_prefix() {
        assert_eq!(
            super::crate_key("serde", "1.0.0"),
            "crates/se/rd/serde/serde-1.0.0.crate"
        );
        assert_eq!(
            super::crate_key("a", "0.1.0+b"),
            "crates/1/a/a-0.1.0+b.crate"
        );
    }
}
