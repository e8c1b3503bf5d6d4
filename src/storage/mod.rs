//! Where `.crate` files live: the `CrateStore` trait, one implementation per
//! backend. A store only ever receives files that were already verified, so
//! nothing partial or unverified is readable under a final key.

pub mod local;

use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use crate::index::path::prefix;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A stored object being read.
pub struct StoredObject {
    pub len: u64,
    pub body: ByteStream,
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
}

/// The storage key of a crate version: `crates/{prefix}/{name}/{name}-{version}.crate`,
/// with the lowercased name, the same for every backend.
pub fn crate_key(name_key: &str, version: &str) -> String {
    format!(
        "crates/{}/{name_key}/{name_key}-{version}.crate",
        prefix(name_key)
    )
}

#[cfg(test)]
mod tests {
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
