//! The download path: a stored crate is streamed from the `CrateStore`; a missing
//! one is fetched once from the upstream's `dl`, written to a temp file while every
//! waiting client streams from that file, and committed to the store only when its
//! sha256 equals the index `cksum`.
//!
//! The fetch runs in its own task, so it finishes (and fills the cache) even when
//! the client that started it goes away. Clients are never sent the end of a body
//! before it has been verified: the last byte of a known length, and with no
//! Content-Length the last chunk received (any chunk may turn out to be the last),
//! are held back until the sha256 matches. A bad download ends in a broken
//! connection, never in a complete-looking wrong file.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::index::cache::{CacheOutcome, IndexCache, IndexError, IndexLookup};
use crate::index::lines::{is_sha256_hex, VersionRecord};
use crate::metrics::Metrics;
use crate::names::{CrateName, CrateVersion};
use crate::storage::{crate_key, ByteStream, CrateStore, StorageError};
use crate::upstream::{DownloadStart, UpstreamClient, UpstreamError};

const READ_CHUNK: usize = 64 * 1024;

/// Why a download failed. `Clone`, so that every client following one fetch
/// gets its failure: causes that are not `Clone` are shared behind an `Arc`,
/// and stay the error's `source()`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CrateError {
    #[error("no such crate version")]
    NotFound,
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the index line of this version has no valid cksum")]
    BadIndexLine,
    #[error("the upstream sent a body whose sha256 does not match the index cksum")]
    ChecksumMismatch,
    #[error("the upstream body length differs from its Content-Length")]
    LengthMismatch,
    /// The store, or the temp file a download is written to.
    #[error("crate storage: {0}")]
    Storage(#[source] Arc<StorageError>),
    #[error("download aborted")]
    Aborted,
    /// The version is on the deny list: the text is the rule as written.
    #[error("refused by the mirror's deny rule {0:?}")]
    Denied(String),
}

impl From<StorageError> for CrateError {
    fn from(err: StorageError) -> Self {
        CrateError::Storage(Arc::new(err))
    }
}

/// Temp file I/O: the temp dir is part of the storage.
impl From<std::io::Error> for CrateError {
    fn from(err: std::io::Error) -> Self {
        StorageError::Io(err).into()
    }
}

/// Where a download's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// From the store.
    Hit,
    /// This request started the upstream fetch.
    Miss,
    /// This request joined a fetch already under way.
    Joined,
}

impl DownloadOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DownloadOutcome::Hit => "hit",
            DownloadOutcome::Miss => "miss",
            DownloadOutcome::Joined => "joined",
        }
    }

    /// The `x-cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DownloadOutcome::Hit => "HIT",
            DownloadOutcome::Miss => "MISS",
            DownloadOutcome::Joined => "JOINED",
        }
    }
}

/// How a download is answered.
pub enum CrateDownload {
    /// The bytes, streamed through the mirror.
    Stream {
        /// Known for hits, and for misses when the upstream sent a Content-Length.
        len: Option<u64>,
        body: ByteStream,
        outcome: DownloadOutcome,
    },
    /// The client fetches the stored object directly (a presigned URL).
    Redirect(String),
}

#[derive(Debug, Clone)]
enum Phase {
    Connecting,
    Streaming,
    Done,
    Failed(CrateError),
}

/// What readers of an in-flight download watch.
#[derive(Debug, Clone)]
struct Progress {
    len: Option<u64>,
    written: u64,
    /// What readers may have before the body is verified: less than `written`,
    /// so that the end of the body waits for the sha256.
    released: u64,
    phase: Phase,
}

/// One upstream fetch under way: the temp file (opened for reading before the
/// fetch starts, so a rename or unlink never pulls it from under a reader) and
/// the progress of the writer.
struct InFlight {
    file: Arc<std::fs::File>,
    progress: watch::Receiver<Progress>,
}

struct Inner {
    index: IndexCache,
    upstream: Arc<UpstreamClient>,
    store: Arc<dyn CrateStore>,
    tmp_dir: PathBuf,
    in_flight: Mutex<HashMap<String, Arc<InFlight>>>,
    metrics: Arc<Metrics>,
    temp_counter: AtomicU64,
}

#[derive(Clone)]
pub struct CrateService {
    inner: Arc<Inner>,
}

impl CrateService {
    /// `tmp_dir` must be on the same filesystem as a local store, so commits are renames.
    pub fn new(
        index: IndexCache,
        upstream: Arc<UpstreamClient>,
        store: Arc<dyn CrateStore>,
        tmp_dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                index,
                upstream,
                store,
                tmp_dir,
                in_flight: Mutex::new(HashMap::new()),
                metrics,
                temp_counter: AtomicU64::new(0),
            }),
        }
    }

    pub async fn download(
        &self,
        name: &CrateName,
        version: &CrateVersion,
    ) -> Result<CrateDownload, CrateError> {
        let result = self.try_download(name, version).await;
        let label = match &result {
            Ok(CrateDownload::Redirect(_)) => "redirect",
            Ok(CrateDownload::Stream { outcome, .. }) => outcome.label(),
            Err(_) => "error",
        };
        self.inner
            .metrics
            .crates
            .downloads
            .with_label_values(&[label])
            .inc();
        result
    }

    async fn try_download(
        &self,
        name: &CrateName,
        version: &CrateVersion,
    ) -> Result<CrateDownload, CrateError> {
        let inner = &self.inner;
        // Before the store: a version stored before it was denied stays refused.
        if let Some(rule) = inner.index.denied_by(name.as_str(), version.as_str()) {
            return Err(CrateError::Denied(rule));
        }
        // Stored objects were verified when they were committed, so a hit needs no
        // index line: hits are cheaper, and they work when neither the index file
        // nor the upstream is at hand (a fresh node on a shared bucket).
        let key = crate_key(name.key(), version.as_str());
        if let Some(url) = inner.store.redirect_url(&key).await? {
            return Ok(CrateDownload::Redirect(url));
        }
        if let Some(object) = inner.store.get(&key).await? {
            return Ok(CrateDownload::Stream {
                len: Some(object.len),
                body: object.body,
                outcome: DownloadOutcome::Hit,
            });
        }
        let record = self.version_record(name, version).await?;
        let (flight, outcome) = Inner::join_or_start(inner, key, record)?;
        if outcome == DownloadOutcome::Joined {
            inner
                .metrics
                .upstream
                .coalesced_waits
                .with_label_values(&["crate"])
                .inc();
        }
        let mut progress = flight.progress.clone();
        // Answer with a status only once the upstream has answered: a missing
        // crate is a 404, not a 200 that breaks off.
        let len = loop {
            let current = progress.borrow_and_update().clone();
            match current.phase {
                Phase::Connecting => {}
                Phase::Failed(err) if current.written == 0 => return Err(err),
                _ => break current.len,
            }
            progress.changed().await.map_err(|_| CrateError::Aborted)?;
        };
        Ok(CrateDownload::Stream {
            len,
            body: follow(flight.file.clone(), progress),
            outcome,
        })
    }

    /// The index line of `version`. A fresh copy that lacks it is revalidated,
    /// since a version published within the TTL may be asked for by a client that
    /// saw a newer index elsewhere (another mirror node, the upstream itself); the
    /// index cache allows that once per crate per revalidate interval, so made-up
    /// versions cannot make every request an upstream fetch.
    async fn version_record(
        &self,
        name: &CrateName,
        version: &CrateVersion,
    ) -> Result<VersionRecord, CrateError> {
        let index = &self.inner.index;
        let lookup = index.get(name).await?;
        if let Some(record) = checked_record(&lookup, version).await? {
            return Ok(record);
        }
        if lookup.outcome != CacheOutcome::Hit || !lookup.entry.is_found() {
            return Err(CrateError::NotFound);
        }
        let lookup = index.revalidate(name).await?;
        checked_record(&lookup, version)
            .await?
            .ok_or(CrateError::NotFound)
    }
}

/// The index line of `version` in `lookup`, when there is one.
/// Read from the compressed body as it is decompressed, on a blocking thread.
async fn checked_record(
    lookup: &IndexLookup,
    version: &CrateVersion,
) -> Result<Option<VersionRecord>, CrateError> {
    if !lookup.entry.is_found() {
        return Ok(None);
    }
    let (entry, vers) = (lookup.entry.clone(), version.as_str().to_string());
    let found =
        crate::blocking::off_async(move || entry.file().and_then(|file| file.find_version(&vers)))
            .await;
    match found {
        Some(record) if !is_sha256_hex(&record.cksum) => Err(CrateError::BadIndexLine),
        found => Ok(found),
    }
}

impl Inner {
    fn join_or_start(
        self: &Arc<Self>,
        key: String,
        record: VersionRecord,
    ) -> Result<(Arc<InFlight>, DownloadOutcome), CrateError> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = in_flight.get(&key) {
            return Ok((flight.clone(), DownloadOutcome::Joined));
        }
        let temp_path = self.tmp_dir.join(format!(
            "{}-{}-{}.part",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed),
            record.cksum.get(..16).unwrap_or("x"),
        ));
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        let reader = std::fs::File::open(&temp_path)?;
        let (tx, rx) = watch::channel(Progress {
            len: None,
            written: 0,
            released: 0,
            phase: Phase::Connecting,
        });
        let flight = Arc::new(InFlight {
            file: Arc::new(reader),
            progress: rx,
        });
        in_flight.insert(key.clone(), flight.clone());
        drop(in_flight);

        let inner = self.clone();
        tokio::spawn(async move {
            let fetched = inner
                .fetch(&record, tokio::fs::File::from_std(writer), &tx)
                .await;
            let committed = match fetched {
                Ok(()) => inner
                    .store
                    .commit(&key, &temp_path)
                    .await
                    .map_err(CrateError::from),
                Err(err) => Err(err),
            };
            match committed {
                Ok(()) => tx.send_modify(|p| p.phase = Phase::Done),
                Err(err) => {
                    let _ = tokio::fs::remove_file(&temp_path).await;
                    // Logged and counted once the temp file is gone: a
                    // failure reported is one fully cleaned up (tests wait
                    // for the report).
                    tracing::warn!(krate = %record.name, version = %record.vers, error = %err, "crate download failed");
                    if matches!(err, CrateError::ChecksumMismatch) {
                        inner.metrics.crates.checksum_failures.inc();
                    }
                    tx.send_modify(|p| p.phase = Phase::Failed(err));
                }
            }
            inner
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        });
        Ok((flight, DownloadOutcome::Miss))
    }

    /// Streams the upstream body into `file`, publishing progress, and checks
    /// length and sha256. The caller commits or discards the file.
    async fn fetch(
        &self,
        record: &VersionRecord,
        mut file: tokio::fs::File,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), CrateError> {
        let config = self.upstream.config().await?;
        let url = config.download_url(&record.name, &record.vers, &record.cksum);
        let mut download = match self.upstream.download(&url).await? {
            DownloadStart::Found(download) => download,
            DownloadStart::Missing => return Err(CrateError::NotFound),
        };
        let expected = download.content_length;
        tx.send_modify(|p| {
            p.len = expected;
            p.phase = Phase::Streaming;
        });
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = download.body.next().await {
            let chunk = chunk?;
            if chunk.is_empty() {
                continue;
            }
            // Everything before this chunk; with no length known, this chunk may
            // be the last, so it waits for the end of the body and its sha256.
            let before = written;
            written += chunk.len() as u64;
            if expected.is_some_and(|len| written > len) {
                return Err(CrateError::LengthMismatch);
            }
            file.write_all(&chunk).await?;
            // tokio's File completes writes in the background; readers use their own
            // descriptor, so the bytes must be in the file before they are announced.
            file.flush().await?;
            hasher.update(&chunk);
            self.metrics
                .upstream
                .fetched_bytes
                .with_label_values(&["crate"])
                .inc_by(chunk.len() as u64);
            let released = match expected {
                Some(len) => written.min(len.saturating_sub(1)),
                None => before,
            };
            tx.send_modify(|p| {
                p.written = written;
                p.released = released;
            });
        }
        if expected.is_some_and(|len| written != len) {
            return Err(CrateError::LengthMismatch);
        }
        file.sync_all().await?;
        if hex::encode(hasher.finalize()) != record.cksum {
            return Err(CrateError::ChecksumMismatch);
        }
        Ok(())
    }
}

/// A stream of the temp file's bytes as the writer releases them. While the
/// download runs, the end of the body is held back until it is verified (see
/// `Progress::released`); a failure ends the stream with an error.
fn follow(file: Arc<std::fs::File>, progress: watch::Receiver<Progress>) -> ByteStream {
    struct Reader {
        file: Arc<std::fs::File>,
        progress: watch::Receiver<Progress>,
        offset: u64,
        finished: bool,
    }
    let start = Reader {
        file,
        progress,
        offset: 0,
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(
        start,
        |mut reader| async move {
            if reader.finished {
                return None;
            }
            loop {
                let current = reader.progress.borrow_and_update().clone();
                let readable = match &current.phase {
                    Phase::Failed(err) => {
                        reader.finished = true;
                        return Some((Err(std::io::Error::other(err.clone())), reader));
                    }
                    Phase::Done => current.written,
                    Phase::Connecting | Phase::Streaming => current.released,
                };
                if reader.offset < readable {
                    let want = (readable - reader.offset).min(READ_CHUNK as u64) as usize;
                    match read_at(reader.file.clone(), reader.offset, want).await {
                        Ok(chunk) => {
                            reader.offset += chunk.len() as u64;
                            return Some((Ok(chunk), reader));
                        }
                        Err(err) => {
                            reader.finished = true;
                            return Some((Err(err), reader));
                        }
                    }
                }
                if matches!(current.phase, Phase::Done) {
                    return None;
                }
                if reader.progress.changed().await.is_err() {
                    reader.finished = true;
                    let err = std::io::Error::other("download task ended without a result");
                    return Some((Err(err), reader));
                }
            }
        },
    ))
}

async fn read_at(file: Arc<std::fs::File>, offset: u64, want: usize) -> std::io::Result<Bytes> {
    let chunk = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0; want];
        let n = file.read_at(&mut buf, offset)?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(std::io::Error::other)??;
    if chunk.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "temp file shorter than announced",
        ));
    }
    Ok(Bytes::from(chunk))
}

/// Removes temp files left by a previous run (a crash mid-download).
pub fn clean_temp_dir(tmp_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(tmp_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "part") {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::io::ErrorKind;

    use super::*;

    /// The storage error a `CrateError` holds, found as its `source()`.
    fn storage_source(err: &CrateError) -> &Arc<StorageError> {
        err.source()
            .and_then(|source| source.downcast_ref::<Arc<StorageError>>())
            .expect("the storage error is the source")
    }

    #[test]
    fn store_failures_keep_their_cause_in_every_clone() {
        let err = CrateError::from(StorageError::Settings("no credentials".into()));
        let theirs = err.clone();
        let source = storage_source(&err);
        assert!(matches!(&**source, StorageError::Settings(why) if why == "no credentials"));
        // A waiter's clone shares the very error, not a copy of its text.
        assert!(Arc::ptr_eq(source, storage_source(&theirs)));
        assert_eq!(err.to_string(), "crate storage: no credentials");
    }

    #[test]
    fn temp_file_failures_keep_the_io_error() {
        let io = std::io::Error::new(ErrorKind::PermissionDenied, "tmp is read-only");
        let err = CrateError::from(io);
        assert!(matches!(&**storage_source(&err), StorageError::Io(_)));
        let cause = err
            .source()
            .and_then(Error::source)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .expect("the I/O error is the storage error's source");
        assert_eq!(cause.kind(), ErrorKind::PermissionDenied);
        assert_eq!(cause.to_string(), "tmp is read-only");
    }
}
