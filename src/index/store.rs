//! Durable copies of index files in sled: tree `index`, key = lowercased crate
//! name, value = a small JSON header (validators, our ETag, times) followed by the
//! body, so a restart serves what was cached without asking the upstream.
//!
//! The body is stored gzip'd (header `"gzip": true`): what clients are sent,
//! about 15x smaller than the plain file, and cheaper to read back
//! (decompressing) than to compress again after a restart. Records written
//! plain by earlier versions still read; the cache rewrites them gzip'd when
//! it loads them.
//!
//! The number of records is kept in a counter (counted once at open, then
//! moved by `save` and `remove`): sled's own `len` walks the whole tree, and
//! the dashboard asks for the count every two seconds.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

impl StoreError {
    /// Whether this says the record (or the database under it) is damaged,
    /// rather than that the database cannot be reached.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Corrupt(_) => true,
            StoreError::Sled(err) => is_sled_damage(err),
        }
    }
}

/// Whether sled's error says the database's files are damaged (rather than
/// that they cannot be reached: a lock held by another process, a
/// permission, a missing dir, which moving the database aside would not
/// mend and would turn a good cache into an empty one).
pub fn is_sled_damage(err: &sled::Error) -> bool {
    match err {
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => true,
        sled::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
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
    /// The plain body's length, so that a compressed record can be loaded
    /// without decompressing it (absent in records of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_len: Option<u64>,
    /// Whether the gzip body is the upstream's own bytes (it sent the file
    /// gzip'd), so that what the upstream sends for it is known after a
    /// restart (absent: it sent it plain, or an earlier version wrote it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upstream_gzip: bool,
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

    /// The header of a stored value, and where its body starts.
    fn decode_header(key: &str, value: &[u8]) -> Result<(StoredHeader, usize), StoreError> {
        let corrupt = || StoreError::Corrupt(key.to_string());
        let len_bytes: [u8; 4] = value
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let header_end = 4 + u32::from_le_bytes(len_bytes) as usize;
        let header = value.get(4..header_end).ok_or_else(corrupt)?;
        let header = serde_json::from_slice(header).map_err(|_| corrupt())?;
        Ok((header, header_end))
    }

    fn decode(key: &str, value: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt(key.to_string());
        let (mut header, header_end) = Self::decode_header(key, value)?;
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
            body: crate::upstream::exact(plain),
            gzip: Some(stored),
        })
    }
}

/// A record as it is kept in memory: the gzip body as stored, not
/// decompressed (see `IndexStore::load_compressed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedIndex {
    pub header: StoredHeader,
    /// The gzip body, or the plain one of a record an earlier version wrote
    /// plain (`header.gzip` false): the caller compresses and rewrites it.
    pub stored: Bytes,
}

impl CompressedIndex {
    fn decode(key: &str, value: &[u8]) -> Result<Self, StoreError> {
        let (header, header_end) = StoredIndex::decode_header(key, value)?;
        Ok(Self {
            header,
            stored: Bytes::copy_from_slice(&value[header_end..]),
        })
    }
}

/// The sled tree of index files. Clones share the tree and its count.
#[derive(Clone)]
pub struct IndexStore {
    tree: sled::Tree,
    /// Records in the tree: exact as long as every write goes through `save`
    /// and `remove`, which count what sled says they did.
    count: Arc<AtomicU64>,
}

impl IndexStore {
    /// Opens the tree and counts its records: a walk of the whole tree, once.
    /// Blocking: call it off the async threads.
    pub fn open(db: &sled::Db) -> Result<Self, StoreError> {
        let tree = db.open_tree("index")?;
        let mut count = 0;
        for key in tree.iter().keys() {
            key?;
            count += 1;
        }
        Ok(Self {
            tree,
            count: Arc::new(AtomicU64::new(count)),
        })
    }

    pub fn load(&self, key: &str) -> Result<Option<StoredIndex>, StoreError> {
        self.tree
            .get(key)?
            .map(|value| StoredIndex::decode(key, &value))
            .transpose()
    }

    /// The record of `key` without decompressing its body: what the index
    /// cache keeps in memory.
    pub fn load_compressed(&self, key: &str) -> Result<Option<CompressedIndex>, StoreError> {
        self.tree
            .get(key)?
            .map(|value| CompressedIndex::decode(key, &value))
            .transpose()
    }

    pub fn save(&self, key: &str, record: &StoredIndex) -> Result<(), StoreError> {
        // sled answers with the value replaced, atomically: of two saves of a
        // new key at once, exactly one finds nothing there and counts it.
        if self.tree.insert(key, record.encode())?.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes `key`; tells whether it was there.
    pub fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let removed = self.tree.remove(key)?.is_some();
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    /// Whether a record is stored under `key` (its value is not decoded).
    pub fn contains(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(key)?)
    }

    /// Every stored key, in key order, without reading the records.
    pub fn keys(&self) -> impl Iterator<Item = Result<String, StoreError>> + '_ {
        self.tree
            .iter()
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?).into_owned()))
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

    /// Every stored record's header, by key, in key order, without reading
    /// (or decompressing) the bodies.
    pub fn headers(&self) -> impl Iterator<Item = Result<(String, StoredHeader), StoreError>> + '_ {
        self.tree.iter().map(|entry| {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let (header, _) = StoredIndex::decode_header(&key, &value)?;
            Ok((key, header))
        })
    }

    /// Records stored: a counter, no walk of the tree.
    pub fn len(&self) -> usize {
        usize::try_from(self.count.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
                plain_len: None,
                upstream_gzip: false,
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

    fn record(body: &'static [u8]) -> StoredIndex {
        StoredIndex {
            header: StoredHeader {
                upstream: Validators::default(),
                etag: "\"e\"".into(),
                changed_at_ms: 1,
                fetched_at_ms: 1,
                gzip: false,
                plain_len: None,
                upstream_gzip: false,
            },
            body: Bytes::from_static(body),
            gzip: None,
        }
    }

    #[test]
    fn the_count_follows_inserts_replacements_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = IndexStore::open(&db).unwrap();
        assert_eq!(store.len(), 0);
        store.save("a", &record(b"1\n")).unwrap();
        store.save("b", &record(b"1\n")).unwrap();
        store.save("a", &record(b"2\n")).unwrap();
        assert_eq!(store.len(), 2, "a replacement is not a new record");
        assert!(store.remove("a").unwrap());
        assert!(!store.remove("a").unwrap());
        assert!(!store.remove("never").unwrap());
        assert_eq!(store.len(), 1);
        // Many writers of the same keys at once, through clones.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let store = store.clone();
                scope.spawn(move || {
                    for n in 0..200 {
                        let key = format!("k{}", n % 50);
                        if n % 3 == 0 {
                            store.remove(&key).unwrap();
                        } else {
                            store.save(&key, &record(b"x\n")).unwrap();
                        }
                    }
                });
            }
        });
        assert_eq!(store.len(), store.tree.len());
        // A reopen counts what is there.
        let expected = store.len();
        drop(store);
        assert_eq!(IndexStore::open(&db).unwrap().len(), expected);
    }

    #[test]
    fn headers_are_read_without_the_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = IndexStore::open(&db).unwrap();
        store.save("a", &record(b"1\n")).unwrap();
        let headers: Vec<_> = store.headers().map(Result::unwrap).collect();
        assert_eq!(headers, vec![("a".to_string(), record(b"1\n").header)]);
        store.tree.insert("bad", &b"xx"[..]).unwrap();
        assert!(store.headers().any(|h| h.is_err()));
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
