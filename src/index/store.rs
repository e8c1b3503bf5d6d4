//! Durable copies of index files in sled: tree `index`, key = lowercased crate
//! name, value = a small JSON header (validators, our ETag, times) followed by the
//! raw body, so a restart serves what was cached without asking the upstream.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::upstream::Validators;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt index record for {0}")]
    Corrupt(String),
}

/// One index file as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIndex {
    pub header: StoredHeader,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHeader {
    /// The upstream's validators, for revalidation.
    pub upstream: Validators,
    /// Our ETag (quoted), derived from the body.
    pub etag: String,
    /// When the body last changed, in ms since the epoch (our Last-Modified).
    pub changed_at_ms: u64,
    /// When the upstream last confirmed the body, in ms since the epoch.
    pub fetched_at_ms: u64,
}

impl StoredIndex {
    fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        let mut value = Vec::with_capacity(4 + header.len() + self.body.len());
        value.extend_from_slice(&(header.len() as u32).to_le_bytes());
        value.extend_from_slice(&header);
        value.extend_from_slice(&self.body);
        value
    }

    fn decode(key: &str, value: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt(key.to_string());
        let len_bytes: [u8; 4] = value
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let header_end = 4 + u32::from_le_bytes(len_bytes) as usize;
        let header = value.get(4..header_end).ok_or_else(corrupt)?;
        let header: StoredHeader = serde_json::from_slice(header).map_err(|_| corrupt())?;
        Ok(Self {
            header,
            body: Bytes::copy_from_slice(&value[header_end..]),
        })
    }
}

/// The sled tree of index files.
#[derive(Clone)]
pub struct IndexStore {
    tree: sled::Tree,
}

impl IndexStore {
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.open_tree("index")?,
        })
    }

    pub fn load(&self, key: &str) -> Result<Option<StoredIndex>, StoreError> {
        self.tree
            .get(key)?
            .map(|value| StoredIndex::decode(key, &value))
            .transpose()
    }

    pub fn save(&self, key: &str, record: &StoredIndex) -> Result<(), StoreError> {
        self.tree.insert(key, record.encode())?;
        Ok(())
    }

    /// Removes `key`; tells whether it was there.
    pub fn remove(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree.remove(key)?.is_some())
    }

    /// Every stored index file, by key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(String, StoredIndex), StoreError>> + '_ {
        self.tree.iter().map(|entry| {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let record = StoredIndex::decode(&key, &value)?;
            Ok((key, record))
        })
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = IndexStore::open(&db).unwrap();
        let record = StoredIndex {
            header: StoredHeader {
                upstream: Validators {
                    etag: Some("\"up\"".into()),
                    last_modified: None,
                },
                etag: "\"ours\"".into(),
                changed_at_ms: 1,
                fetched_at_ms: 2,
            },
            body: Bytes::from_static(b"{\"name\":\"a\"}\n"),
        };
        store.save("a", &record).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(record));
        assert_eq!(store.load("b").unwrap(), None);
        store.remove("a").unwrap();
        assert!(store.is_empty());
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert!(StoredIndex::decode("k", b"").is_err());
        assert!(StoredIndex::decode("k", &[255, 255, 0, 0, 1]).is_err());
        assert!(StoredIndex::decode("k", &[2, 0, 0, 0, b'{', b'x']).is_err());
    }
}
