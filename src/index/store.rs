//! Durable copies of index files in sled: tree `index`, key = lowercased crate
//! name, value = a small JSON header (validators, our ETag, times) followed by the
//! body, so a restart serves what was cached without asking the upstream.
//!
//! The body is stored gzip'd (header `"gzip": true`): what clients are sent,
//! about 15x smaller than the plain file, and cheaper to read back
//! (decompressing) than to compress again after a restart. Records written
//! plain by earlier versions still read; the cache rewrites them gzip'd when
//! it loads them.

use std::io::Read;

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
    /// The plain body.
    pub body: Bytes,
    /// The body gzip'd: written in its place when present; present after a
    /// load unless the record was written plain (by an earlier version).
    pub gzip: Option<Bytes>,
}

/// The largest plain body a stored record may expand to (as the upstream's limit).
const MAX_PLAIN_BYTES: u64 = 32 << 20;

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
    /// Whether the stored body is gzip'd (absent in records of earlier versions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gzip: bool,
}

impl StoredIndex {
    fn encode(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        header.gzip = self.gzip.is_some();
        let body = self.gzip.as_ref().unwrap_or(&self.body);
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut value = Vec::with_capacity(4 + header.len() + body.len());
        value.extend_from_slice(&(header.len() as u32).to_le_bytes());
        value.extend_from_slice(&header);
        value.extend_from_slice(body);
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
        let mut header: StoredHeader = serde_json::from_slice(header).map_err(|_| corrupt())?;
        let stored = Bytes::copy_from_slice(&value[header_end..]);
        if !header.gzip {
            return Ok(Self {
                header,
                body: stored,
                gzip: None,
            });
        }
        header.gzip = false;
        let mut plain = Vec::with_capacity((stored.len() * 8).min(MAX_PLAIN_BYTES as usize));
        let read = flate2::read::GzDecoder::new(&stored[..])
            .take(MAX_PLAIN_BYTES + 1)
            .read_to_end(&mut plain)
            .map_err(|_| corrupt())?;
        // Never written by the mirror (the upstream's limit is the same):
        // a record this large is damaged, not to be served cut short.
        if read as u64 > MAX_PLAIN_BYTES {
            return Err(corrupt());
        }
        Ok(Self {
            header,
            body: Bytes::from(plain),
            gzip: Some(stored),
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
                gzip: false,
            },
            body: Bytes::from_static(b"{\"name\":\"a\"}\n"),
            gzip: None,
        };
        store.save("a", &record).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(record.clone()));
        // Saved with its gzip form: that is what is stored, and a load gives
        // back both.
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        std::io::Write::write_all(&mut encoder, &record.body).unwrap();
        let gzip = Bytes::from(encoder.finish().unwrap());
        let compressed = StoredIndex {
            gzip: Some(gzip.clone()),
            ..record.clone()
        };
        store.save("a", &compressed).unwrap();
        let raw = store.tree.get("a").unwrap().unwrap();
        assert!(raw.ends_with(&gzip), "the gzip bytes are what is stored");
        assert_eq!(store.load("a").unwrap(), Some(compressed));
        assert_eq!(store.load("b").unwrap(), None);
        store.remove("a").unwrap();
        assert!(store.is_empty());
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert!(StoredIndex::decode("k", b"").is_err());
        assert!(StoredIndex::decode("k", &[255, 255, 0, 0, 1]).is_err());
        assert!(StoredIndex::decode("k", &[2, 0, 0, 0, b'{', b'x']).is_err());
        let header =
            br#"{"upstream":{},"etag":"e","changed_at_ms":1,"fetched_at_ms":1,"gzip":true}"#;
        let mut value = (header.len() as u32).to_le_bytes().to_vec();
        value.extend_from_slice(header);
        value.extend_from_slice(b"not gzip");
        assert!(StoredIndex::decode("k", &value).is_err());
    }
}
