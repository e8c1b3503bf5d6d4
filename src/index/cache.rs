//! `IndexCache`: index files by crate name, from memory (moka) when fresh, else
//! from sled and the upstream, with revalidation, stale-on-error, negative
//! caching and one upstream fetch per name however many clients ask at once.
//!
//! A fresh copy is revalidated ahead of its TTL only when a download names a
//! version it lacks, and then at most once per crate per revalidate interval
//! while the file is unchanged: otherwise made-up versions would turn every
//! request into an upstream fetch.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::future::Cache;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};

use super::lines::{validate_index, VersionRecord};
use super::store::{CompressedIndex, IndexStore, StoreError, StoredHeader, StoredIndex};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::names::CrateName;
use crate::policy::Policy;
use crate::single_flight::{FlightAborted, Role, SingleFlight};
use crate::upstream::{Cause, IndexBody, IndexFetch, UpstreamClient, UpstreamError, Validators};

/// After a failed revalidation, the stale copy is served this long (at most the
/// TTL) before the upstream is tried again, so an outage does not turn every
/// request into a wait for the upstream's timeout.
const STALE_RETRY: Duration = Duration::from_secs(5);

/// The revalidate interval when none is configured (the setting's default).
pub const DEFAULT_REVALIDATE_INTERVAL: Duration = Duration::from_secs(10);

/// Bytes of recent plain bodies kept besides the compressed hot cache (see
/// `Inner::plain_bodies`): about a hundred average files, for what one
/// resolve's prefetching re-reads and clients without gzip; small, and let
/// go of when idle, so that memory is the compressed copies once a burst is
/// over. Files just fetched go there only when prefetch is on (its re-reads
/// must not wait for a blocking hop); keeping every fetched body in a 32 MiB
/// one measured as 30 MB more resident memory after the 626 fixture files.
const PLAIN_CACHE_BYTES: u64 = 8 << 20;
/// How long an unused plain body is kept.
const PLAIN_CACHE_IDLE: Duration = Duration::from_secs(30);
/// Bytes of plain bodies kept for clients that do not accept gzip, apart
/// from the prefetcher's: filled only by such clients (none, with cargo), so
/// it costs nothing unless they come; when they do, decompressing each answer
/// cost a third of identity hits' throughput (`benches/versus_nginx/`, a 17.6
/// MiB index set against an 8 MiB cache: 0.84x nginx, 1.18x before).
const IDENTITY_CACHE_BYTES: u64 = 32 << 20;

/// Crates whose last forced revalidation is remembered; beyond it the oldest
/// are forgotten, which at worst allows one more forced fetch of those.
const FORCED_CAPACITY: u64 = 100_000;

/// Why an index file could not be had. `Clone`, since one fetch's result is
/// shared by every request that waited for it: causes that are not `Clone`
/// are shared behind an `Arc`, and stay the error's `source()`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("index storage: {0}")]
    Storage(#[source] Arc<StoreError>),
    /// Work handed to the blocking pool panicked or was cancelled.
    #[error("background work failed: {0}")]
    Background(#[source] Arc<tokio::task::JoinError>),
    #[error(transparent)]
    Aborted(#[from] FlightAborted),
}

impl From<StoreError> for IndexError {
    fn from(err: StoreError) -> Self {
        IndexError::Storage(Arc::new(err))
    }
}

/// One cached answer for a crate's index file: the file, or the upstream's
/// refusal of it. Each has its own expiry (`index-ttl` or `negative-ttl`).
#[derive(Debug)]
pub enum IndexEntry {
    Found(IndexFile),
    Missing(Refusal),
}

/// The upstream's 404/410/451 for a crate, remembered for `negative-ttl`.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    expires_at: Instant,
}

/// A cached index file, with everything a response needs precomputed so that
/// serving it allocates nothing.
#[derive(Debug)]
pub struct IndexFile {
    /// The body gzip'd, the one copy held: the upstream's own bytes when it
    /// sent gzip, else compressed once when the entry was made, off the async
    /// threads. Served as it is to every client that accepts gzip (cargo
    /// always does); the plain body is made from it when something needs it
    /// (`IndexCache::plain`, `IndexFile::find_version`).
    gzip: Bytes,
    /// The plain body's length.
    plain_len: u64,
    /// `gzip` is the upstream's own bytes (it sent the file gzip'd): what it
    /// sends for the file, for the bytes avoided (see `upstream_gzip_len`).
    upstream_gzip: bool,
    /// Our ETag, quoted: a hash of the body, stable across restarts and nodes.
    pub etag: String,
    pub changed_at: SystemTime,
    /// `changed_at` as an HTTP date.
    pub last_modified: String,
    /// Served after the upstream failed to confirm it.
    pub stale: bool,
    /// Fetched by a prefetch and not yet asked for by a client.
    prefetched: AtomicBool,
    /// A background refresh of this copy has been started (once per copy).
    refreshing: AtomicBool,
    upstream: Validators,
    fetched_at: SystemTime,
    expires_at: Instant,
    /// The upstream's body, when the supply-chain policy changed what is
    /// served (`gzip`, `plain_len` and `etag` are then of the served body):
    /// what is stored, so that a later policy filters it afresh.
    source: Option<Arc<Source>>,
    /// When the served body changes next without an upstream change: the
    /// earliest instant a held-back version comes of age.
    next_change: Option<SystemTime>,
}

/// The upstream's body of a file whose served body the policy changed.
#[derive(Debug)]
struct Source {
    gzip: Bytes,
    plain_len: u64,
    etag: String,
}

/// A body as the policy has it served, when it differs from the upstream's.
struct Served {
    plain: Bytes,
    gzip: Bytes,
    etag: String,
    next_change: Option<SystemTime>,
}

/// `plain` (the upstream's body) under `policy` at `now`: `None` when the
/// policy changes nothing in it. CPU work: off the async threads.
fn served_under(plain: &[u8], policy: &Policy, now: SystemTime) -> Option<Served> {
    let filtered = crate::policy::filter(plain, policy, now);
    let std::borrow::Cow::Owned(body) = filtered.body else {
        return None;
    };
    Some(Served {
        gzip: gzip(&body),
        etag: etag_of(&body),
        plain: Bytes::from(body),
        next_change: filtered.next_change,
    })
}

/// What the upstream said about a file, and when: what decides its expiry.
struct Freshness {
    upstream: Validators,
    fetched_at: SystemTime,
    expires_at: Instant,
    stale: bool,
}

impl Freshness {
    /// Fetched at `fetched_at`: fresh for what is left of `ttl` since then.
    fn since(upstream: Validators, fetched_at: SystemTime, ttl: Duration, clock: &Clock) -> Self {
        let age = clock
            .system_now()
            .duration_since(fetched_at)
            .unwrap_or_default();
        Self {
            upstream,
            fetched_at,
            expires_at: clock.now() + ttl.saturating_sub(age),
            stale: false,
        }
    }
}

impl IndexFile {
    fn new(
        gzip: Bytes,
        plain_len: u64,
        etag: String,
        changed_at: SystemTime,
        freshness: Freshness,
    ) -> Self {
        Self {
            gzip,
            plain_len,
            upstream_gzip: false,
            etag,
            changed_at,
            last_modified: httpdate::fmt_http_date(changed_at),
            stale: freshness.stale,
            prefetched: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            upstream: freshness.upstream,
            fetched_at: freshness.fetched_at,
            expires_at: freshness.expires_at,
            source: None,
            next_change: None,
        }
    }

    /// This file (holding the upstream's body) serving `served` instead,
    /// when there is one; the upstream's body is kept as its source.
    fn serving(mut self, served: Option<Served>) -> Self {
        let Some(served) = served else {
            return self;
        };
        let source = Source {
            gzip: std::mem::replace(&mut self.gzip, served.gzip),
            plain_len: std::mem::replace(&mut self.plain_len, served.plain.len() as u64),
            etag: std::mem::replace(&mut self.etag, served.etag),
        };
        self.source = Some(Arc::new(source));
        self.next_change = served.next_change;
        self
    }

    /// The upstream's body: gzip, plain length, ETag.
    fn upstream_body(&self) -> (&Bytes, u64, &str) {
        match &self.source {
            Some(source) => (&source.gzip, source.plain_len, &source.etag),
            None => (&self.gzip, self.plain_len, &self.etag),
        }
    }

    /// Whether a held-back version has come of age, so the served body is
    /// out of date. Reads the clock only when something is held back.
    fn is_due(&self, clock: &Clock) -> bool {
        self.next_change
            .is_some_and(|next| clock.system_now() >= next)
    }

    /// The same file filtered again from the upstream's body at `now`,
    /// changed at `now` (its Last-Modified); freshness and marks carry over.
    /// CPU work: off the async threads.
    fn refiltered(&self, policy: &Policy, now: SystemTime) -> Result<Self, IndexError> {
        let (gzip, plain_len, etag) = self.upstream_body();
        let plain = gunzip(gzip, plain_len).ok_or_else(|| self.corrupt())?;
        let mut file = self.renewed(Freshness {
            upstream: self.upstream.clone(),
            fetched_at: self.fetched_at,
            expires_at: self.expires_at,
            stale: self.stale,
        });
        file.gzip = gzip.clone();
        file.plain_len = plain_len;
        file.etag = etag.to_string();
        file.source = None;
        file.next_change = None;
        file.changed_at = now;
        file.last_modified = httpdate::fmt_http_date(now);
        Ok(file.serving(served_under(&plain, policy, now)))
    }

    /// A file from its stored copy, kept compressed as stored. A record an
    /// earlier version wrote plain is compressed here (the caller rewrites
    /// it); one written without its plain length is measured by reading it
    /// through once. CPU work: run it on a blocking thread.
    fn from_stored(
        stored: CompressedIndex,
        key: &str,
        ttl: Duration,
        clock: &Clock,
    ) -> Result<Self, StoreError> {
        let h = stored.header;
        let (gzip, plain_len) = if h.gzip {
            let plain_len = match h.plain_len {
                Some(len) => len,
                None => plain_len_of(&stored.stored)
                    .ok_or_else(|| StoreError::Corrupt(key.to_string()))?,
            };
            (stored.stored, plain_len)
        } else {
            (gzip(&stored.stored), stored.stored.len() as u64)
        };
        let freshness = Freshness::since(h.upstream, from_ms(h.fetched_at_ms), ttl, clock);
        let mut file = Self::new(gzip, plain_len, h.etag, from_ms(h.changed_at_ms), freshness);
        // Only a gzip record can hold the upstream's gzip bytes.
        file.upstream_gzip = h.gzip && h.upstream_gzip;
        Ok(file)
    }

    /// The stored record: the upstream's body, whatever the policy serves.
    fn to_stored(&self) -> StoredIndex {
        let (gzip, plain_len, etag) = self.upstream_body();
        StoredIndex {
            header: StoredHeader {
                upstream: self.upstream.clone(),
                etag: etag.to_string(),
                changed_at_ms: to_ms(self.changed_at),
                fetched_at_ms: to_ms(self.fetched_at),
                gzip: false,
                plain_len: Some(plain_len),
                upstream_gzip: self.upstream_gzip,
            },
            // Only the gzip body is written (see `StoredIndex::encode`).
            body: Bytes::new(),
            gzip: Some(gzip.clone()),
        }
    }

    /// The same file with a new expiry (and, after a 304, the upstream's
    /// newer validators); a prefetch mark carries over.
    fn renewed(&self, freshness: Freshness) -> Self {
        let mut file = Self::new(
            self.gzip.clone(),
            self.plain_len,
            self.etag.clone(),
            self.changed_at,
            freshness,
        );
        file.upstream_gzip = self.upstream_gzip;
        file.source = self.source.clone();
        file.next_change = self.next_change;
        file.prefetched
            .store(self.prefetched.load(Ordering::Relaxed), Ordering::Relaxed);
        file
    }

    /// Whether this expired copy may still be served at once while a refresh
    /// runs: fetched less than `ttl + max_stale` ago.
    fn within_max_stale(&self, policy: &IndexPolicy, clock: &Clock) -> bool {
        !policy.max_stale.is_zero()
            && clock
                .system_now()
                .duration_since(self.fetched_at)
                .is_ok_and(|age| age < policy.ttl + policy.max_stale)
    }

    /// The body gzip-compressed.
    pub fn gzip_body(&self) -> &Bytes {
        &self.gzip
    }

    /// The plain body's length.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// What the upstream sends for this file to a client that accepts gzip:
    /// the gzip body when it is the upstream's (kept as sent), else the
    /// plain body (it sent it plain; or a record from before this was kept).
    pub fn upstream_gzip_len(&self) -> u64 {
        let (gzip, plain_len, _) = self.upstream_body();
        if self.upstream_gzip {
            gzip.len() as u64
        } else {
            plain_len
        }
    }

    /// The plain body, decompressed (CPU work: not on an async thread; see
    /// `IndexCache::plain`, which keeps recent ones).
    pub fn decompress(&self) -> Result<Bytes, IndexError> {
        gunzip(&self.gzip, self.plain_len).ok_or_else(|| self.corrupt())
    }

    /// The line of `version`, read from the compressed body as it is
    /// decompressed, stopping at the line (CPU work: not on an async thread).
    pub fn find_version(&self, version: &str) -> Option<VersionRecord> {
        let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(&self.gzip[..]));
        std::io::BufRead::split(reader, b'\n')
            .map_while(Result::ok)
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice::<VersionRecord>(&line).ok())
            .find(|record| record.vers == version)
    }

    fn corrupt(&self) -> IndexError {
        StoreError::Corrupt(format!("the gzip body of {}", self.etag)).into()
    }
}

impl IndexEntry {
    fn missing(status: u16, ttl: Duration, clock: &Clock) -> Self {
        IndexEntry::Missing(Refusal {
            status,
            expires_at: clock.now() + ttl,
        })
    }

    /// The file, unless the upstream refused it.
    pub fn file(&self) -> Option<&IndexFile> {
        match self {
            IndexEntry::Found(file) => Some(file),
            IndexEntry::Missing(_) => None,
        }
    }

    pub fn is_found(&self) -> bool {
        self.file().is_some()
    }

    fn is_fresh(&self, clock: &Clock) -> bool {
        let expires_at = match self {
            IndexEntry::Found(file) => file.expires_at,
            IndexEntry::Missing(refusal) => refusal.expires_at,
        };
        clock.now() < expires_at
    }

    /// Served from the upstream's failure to confirm it.
    fn is_stale(&self) -> bool {
        self.file().is_some_and(|file| file.stale)
    }

    fn within_max_stale(&self, policy: &IndexPolicy, clock: &Clock) -> bool {
        self.file()
            .is_some_and(|file| file.within_max_stale(policy, clock))
    }

    /// Whether this was a prefetch's file that no client had asked for; from
    /// now on a client has.
    fn take_prefetched(&self) -> bool {
        self.file()
            .is_some_and(|file| file.prefetched.swap(false, Ordering::Relaxed))
    }

    /// The plain body's length (0 for a refusal).
    fn plain_len(&self) -> u64 {
        self.file().map_or(0, |file| file.plain_len)
    }

    /// Approximate memory held under `key`: the hot cache's weigher, and
    /// what `held` counts.
    fn weight_under(&self, key: &str) -> u32 {
        self.weight()
            .saturating_add(u32::try_from(key.len()).unwrap_or(u32::MAX))
    }

    /// Approximate memory held, for the hot cache's byte budget.
    fn weight(&self) -> u32 {
        let bytes = match self {
            // The gzip body is all that is held: `hot-cache-size` counts
            // compressed bytes.
            IndexEntry::Found(file) => file.gzip.len() + 256,
            IndexEntry::Missing(_) => 64,
        };
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// `body` gzip'd at the default level (CPU work: not on an async thread).
fn gzip(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(body);
    crate::upstream::exact(encoder.finish().unwrap_or_default())
}

/// A cache of plain bodies by ETag, of at most `bytes`, each let go of after
/// `PLAIN_CACHE_IDLE` unused.
fn plain_cache(bytes: u64) -> Cache<String, Bytes> {
    Cache::builder()
        .max_capacity(bytes)
        .time_to_idle(PLAIN_CACHE_IDLE)
        .weigher(|etag: &String, body: &Bytes| {
            u32::try_from(body.len() + etag.len()).unwrap_or(u32::MAX)
        })
        .build()
}

/// `gzip` decompressed, when it is whole and `plain_len` long.
fn gunzip(gzip: &[u8], plain_len: u64) -> Option<Bytes> {
    use std::io::Read;
    let capacity = usize::try_from(plain_len).ok()?.min(MAX_PLAIN_BYTES);
    let mut plain = Vec::with_capacity(capacity);
    flate2::read::GzDecoder::new(gzip)
        .take(MAX_PLAIN_BYTES as u64 + 1)
        .read_to_end(&mut plain)
        .ok()?;
    (plain.len() as u64 == plain_len).then(|| Bytes::from(plain))
}

/// The plain length of a gzip body, read through without keeping it; `None`
/// when it does not decompress (or is larger than any index file may be).
fn plain_len_of(gzip: &[u8]) -> Option<u64> {
    use std::io::Read;
    let read = std::io::copy(
        &mut flate2::read::GzDecoder::new(gzip).take(MAX_PLAIN_BYTES as u64 + 1),
        &mut std::io::sink(),
    )
    .ok()?;
    (read <= MAX_PLAIN_BYTES as u64).then_some(read)
}

/// The largest plain index body kept (the upstream client's limit).
const MAX_PLAIN_BYTES: usize = 32 << 20;

/// Runs CPU or disk work (decompressing, validating, hashing, compressing,
/// sled) on tokio's blocking pool: on the async threads it would delay every
/// other request and the upstream connection's own I/O.
///
/// At most two such jobs per CPU run at once (the rest wait for a permit, not
/// for a thread; two, since a job also writes sled): more would not finish
/// sooner, and every extra thread of tokio's blocking pool keeps its own
/// allocator heap of the bodies it handled, which measured as most of the
/// process's memory after a burst of misses. `benches/compressed_index.rs`,
/// 10,000 misses 32 at a time on 2 CPUs: unbounded 3.0 s; 4 per CPU 3.5 s,
/// 254 MB; 2 per CPU 4.3 s, 218 MB; 1 per CPU 4.9 s, 189 MB.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, IndexError> + Send + 'static,
) -> Result<T, IndexError> {
    static PERMITS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(2 * std::thread::available_parallelism().map_or(2, usize::from))
    });
    // Never closed, so acquiring cannot fail; if it did, run unbounded.
    let _permit = permits.acquire().await.ok();
    tokio::task::spawn_blocking(move || {
        let done = work();
        crate::blocking::release_thread_memory();
        done
    })
    .await
    .map_err(|e| IndexError::Background(Arc::new(e)))?
}

/// An index body from the upstream made ready to cache: decoded, checked,
/// hashed and compressed.
struct Prepared {
    plain: Bytes,
    gzip: Bytes,
    /// `gzip` is the upstream's own.
    upstream_gzip: bool,
    etag: String,
    /// The body the policy has served, when it differs.
    served: Option<Served>,
}

/// The ETag served: of the policy's body when there is one.
fn served_etag<'a>(served: &'a Option<Served>, upstream: &'a str) -> &'a str {
    served
        .as_ref()
        .map_or(upstream, |served| served.etag.as_str())
}

/// What an upstream fetch came to, with a changed body ready to cache.
enum Answer {
    Changed(Prepared, Validators),
    NotModified(Validators),
    Missing(u16),
}

fn prepare(
    body: IndexBody,
    key: &str,
    supply: Option<&Policy>,
    now: SystemTime,
) -> Result<Prepared, UpstreamError> {
    let decoded = body.decode()?;
    validate_index(&decoded.plain, key).map_err(Cause::InvalidIndex)?;
    let upstream_gzip = decoded.gzip.is_some();
    let gzip = decoded.gzip.unwrap_or_else(|| gzip(&decoded.plain));
    let served = supply.and_then(|policy| served_under(&decoded.plain, policy, now));
    Ok(Prepared {
        etag: etag_of(&decoded.plain),
        plain: decoded.plain,
        gzip,
        upstream_gzip,
        served,
    })
}

fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A stored record of `plain`, a body that arrived other than from the
/// upstream (an imported bundle): our ETag and gzip made as for a fetched
/// one, no upstream validators, confirmed now. CPU work: off the async threads.
pub fn record_of(plain: Bytes) -> crate::index::store::StoredIndex {
    let now = to_ms(SystemTime::now());
    crate::index::store::StoredIndex {
        header: crate::index::store::StoredHeader {
            upstream: Validators::default(),
            etag: etag_of(&plain),
            changed_at_ms: now,
            fetched_at_ms: now,
            gzip: false,
            plain_len: Some(plain.len() as u64),
            upstream_gzip: false,
        },
        gzip: Some(gzip(&plain)),
        body: plain,
    }
}

/// Our ETag of a body.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    /// Fresh in memory or in sled.
    Hit,
    /// Fetched from the upstream.
    Miss,
    /// The upstream confirmed or replaced an expired copy.
    Revalidated,
    /// The upstream failed; an expired copy was served.
    Stale,
    /// An expired copy within `index-max-stale` was served at once while a
    /// background refresh asks the upstream.
    Updating,
}

impl CacheOutcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Revalidated => "revalidated",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Updating => "updating",
        }
    }

    /// The `x-cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "HIT",
            CacheOutcome::Miss => "MISS",
            CacheOutcome::Revalidated => "REVALIDATED",
            CacheOutcome::Stale => "STALE",
            CacheOutcome::Updating => "UPDATING",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IndexLookup {
    pub entry: Arc<IndexEntry>,
    pub outcome: CacheOutcome,
}

/// Freshness settings.
#[derive(Debug, Clone, Copy)]
pub struct IndexPolicy {
    pub ttl: Duration,
    /// How long past `ttl` a found file is still served at once while it is
    /// refreshed in the background (0: clients wait for the upstream).
    pub max_stale: Duration,
    pub negative_ttl: Duration,
    pub hot_cache_bytes: u64,
}

impl IndexPolicy {
    pub fn from_config(config: &crate::config::Config) -> Self {
        // Offline, what is stored is all there is: it never expires (an expired
        // file would only be served as stale after a failed refresh).
        const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        Self {
            ttl: if config.offline {
                FOREVER
            } else {
                config.index_ttl
            },
            max_stale: config.index_max_stale,
            negative_ttl: config.negative_ttl,
            hot_cache_bytes: config.hot_cache_bytes,
        }
    }
}

/// The last forced revalidation of one crate: when it ended, and the ETag of
/// the file it left (a different ETag means the file changed since).
#[derive(Debug, Clone)]
struct Forced {
    at: Instant,
    /// `None` when it failed or found no file.
    etag: Option<String>,
}

struct Inner {
    hot: Cache<String, Arc<IndexEntry>>,
    /// Recent plain bodies by ETag, bounded apart from `hot`: for the
    /// prefetcher's re-reads of files it has and the rare client that does
    /// not accept gzip.
    plain_bodies: Cache<String, Bytes>,
    /// Plain bodies asked for by clients that do not accept gzip.
    identity_bodies: Cache<String, Bytes>,
    /// The plain length of every file in `hot`: added when one goes in,
    /// taken off by the eviction listener when it leaves (replaced, evicted
    /// or invalidated), so the figure needs no walk of the cache.
    plain_held: Arc<AtomicU64>,
    /// The weight of every entry in `hot`, counted alike. Not moka's
    /// `weighted_size`, which moves only when its pending work next runs (at
    /// a later lookup), so the figure stood still after a burst of misses.
    held: Arc<AtomicU64>,
    /// Forced revalidations within the last `revalidate_interval`, by crate key.
    forced: Cache<String, Forced>,
    revalidate_interval: Duration,
    store: IndexStore,
    /// Signalled whenever a stored index file is added, changed or removed.
    changed: Arc<Notify>,
    upstream: Arc<UpstreamClient>,
    policy: IndexPolicy,
    metrics: Arc<Metrics>,
    /// Where index files fetched or confirmed by the upstream are announced (the prefetcher).
    fetched: OnceLock<mpsc::UnboundedSender<FetchedIndex>>,
    clock: Clock,
    /// The supply-chain policy, when one can change a body: `None` costs
    /// the hot path nothing.
    supply: Option<Arc<Policy>>,
}

/// Who asked for an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    /// A prefetch this many dependency steps away from a client's request.
    Prefetch(u32),
    /// A refresh of a copy already held that no client waits for (in the
    /// background after the TTL), or forced by a download.
    Revalidation,
}

impl Origin {
    /// The `origin` label of the upstream requests it causes.
    fn label(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Prefetch(_) => "prefetch",
            Origin::Revalidation => "revalidation",
        }
    }
}

/// An index file that just came from the upstream (with a body, or confirmed unchanged by a 304).
#[derive(Debug)]
pub struct FetchedIndex {
    pub name: CrateName,
    pub body: Bytes,
    /// 0 for a client's request, n for a prefetch n steps away.
    pub depth: u32,
}

#[derive(Clone)]
pub struct IndexCache {
    inner: Arc<Inner>,
    flights: Arc<SingleFlight<String, Result<IndexLookup, IndexError>>>,
}

/// Builds an `IndexCache`; the parts every cache needs are given up front,
/// the rest have defaults.
pub struct IndexCacheBuilder {
    store: IndexStore,
    upstream: Arc<UpstreamClient>,
    policy: IndexPolicy,
    metrics: Arc<Metrics>,
    revalidate_interval: Duration,
    clock: Clock,
    supply: Option<Arc<Policy>>,
}

impl IndexCacheBuilder {
    /// The supply-chain policy served bodies follow. Default: none.
    pub fn supply_chain(mut self, policy: Policy) -> Self {
        self.supply = policy.is_active().then(|| Arc::new(policy));
        self
    }

    /// At most one forced revalidation of a crate per `interval` (zero: no
    /// limit). Default: `DEFAULT_REVALIDATE_INTERVAL`.
    pub fn revalidate_interval(mut self, interval: Duration) -> Self {
        self.revalidate_interval = interval;
        self
    }

    /// The time source for expiry. Default: the system's.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn build(self) -> IndexCache {
        let forced = Cache::builder()
            .max_capacity(FORCED_CAPACITY)
            .time_to_live(self.revalidate_interval.max(Duration::from_millis(1)))
            .build();
        let plain_held = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicU64::new(0));
        let (released, released_weight) = (plain_held.clone(), held.clone());
        let hot = Cache::builder()
            .max_capacity(self.policy.hot_cache_bytes)
            .weigher(|key: &String, entry: &Arc<IndexEntry>| entry.weight_under(key))
            .eviction_listener(move |key: Arc<String>, entry: Arc<IndexEntry>, _cause| {
                released.fetch_sub(entry.plain_len(), Ordering::Relaxed);
                released_weight.fetch_sub(u64::from(entry.weight_under(&key)), Ordering::Relaxed);
            })
            .build();
        let plain_bodies = plain_cache(PLAIN_CACHE_BYTES);
        let identity_bodies = plain_cache(IDENTITY_CACHE_BYTES);
        IndexCache {
            inner: Arc::new(Inner {
                hot,
                plain_bodies,
                identity_bodies,
                plain_held,
                held,
                forced,
                revalidate_interval: self.revalidate_interval,
                store: self.store,
                changed: Arc::new(Notify::new()),
                upstream: self.upstream,
                policy: self.policy,
                metrics: self.metrics,
                fetched: OnceLock::new(),
                clock: self.clock,
                supply: self.supply,
            }),
            flights: Arc::default(),
        }
    }
}

impl IndexCache {
    pub fn builder(
        store: IndexStore,
        upstream: Arc<UpstreamClient>,
        policy: IndexPolicy,
        metrics: Arc<Metrics>,
    ) -> IndexCacheBuilder {
        IndexCacheBuilder {
            store,
            upstream,
            policy,
            metrics,
            revalidate_interval: DEFAULT_REVALIDATE_INTERVAL,
            clock: Clock::system(),
            supply: None,
        }
    }

    /// A cache with the default revalidate interval and the system's clock.
    pub fn new(
        store: IndexStore,
        upstream: Arc<UpstreamClient>,
        policy: IndexPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::builder(store, upstream, policy, metrics).build()
    }

    /// Announces every index file fetched or confirmed by the upstream, from
    /// now on (one subscriber: the prefetcher).
    pub fn subscribe_fetches(&self) -> Option<mpsc::UnboundedReceiver<FetchedIndex>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.fetched.set(tx).ok().map(|_| rx)
    }

    /// What the hot cache holds: (bytes as held, i.e. compressed plus a small
    /// overhead per file, and what those files are plain). Counters, no walk.
    pub fn memory(&self) -> (u64, u64) {
        (
            self.inner.held.load(Ordering::Relaxed),
            self.inner.plain_held.load(Ordering::Relaxed),
        )
    }

    /// Whether a fresh copy is in memory (no I/O).
    pub async fn is_fresh(&self, name: &CrateName) -> bool {
        self.inner
            .hot
            .get(name.key())
            .await
            .is_some_and(|entry| entry.is_fresh(&self.inner.clock))
    }

    /// The body of a fresh copy in memory (no I/O), not counted as a client's
    /// request: the prefetcher re-reads files it already has.
    pub async fn peek(&self, name: &CrateName) -> Option<Bytes> {
        let entry = self.inner.hot.get(name.key()).await?;
        if !entry.is_fresh(&self.inner.clock) {
            return None;
        }
        self.plain(&entry).await.ok()
    }

    /// The plain body of a found entry: from the small cache of recent plain
    /// bodies (files just fetched, and files asked for without gzip), else
    /// decompressed on a blocking thread and kept there. A missing entry
    /// gives an empty body.
    pub async fn plain(&self, entry: &Arc<IndexEntry>) -> Result<Bytes, IndexError> {
        self.inner.plain_of(entry).await
    }

    /// The plain body for a client that does not accept gzip: kept apart
    /// (see `IDENTITY_CACHE_BYTES`), so such clients keep theirs at hand.
    pub async fn plain_for_client(&self, entry: &Arc<IndexEntry>) -> Result<Bytes, IndexError> {
        let Some(file) = entry.file() else {
            return Ok(Bytes::new());
        };
        if let Some(plain) = self.inner.identity_bodies.get(&file.etag).await {
            return Ok(plain);
        }
        let plain = self.inner.plain_of(entry).await?;
        self.inner
            .identity_bodies
            .insert(file.etag.clone(), plain.clone())
            .await;
        Ok(plain)
    }

    /// Fetches `name` ahead of a client, unless it is fresh already. A client
    /// asking meanwhile joins this fetch.
    pub async fn prefetch(&self, name: &CrateName, depth: u32) -> Result<(), IndexError> {
        if self.is_fresh(name).await {
            return Ok(());
        }
        self.refresh(name, false, Origin::Prefetch(depth))
            .await
            .map(|_| ())
    }

    /// Notified (one stored permit) whenever a stored index file is added,
    /// changed or removed; the git index rebuilds on it.
    pub fn changes(&self) -> Arc<Notify> {
        self.inner.changed.clone()
    }

    /// The index file of `name`: from memory when fresh (the hot path: no I/O),
    /// else through one shared refresh.
    pub async fn get(&self, name: &CrateName) -> Result<IndexLookup, IndexError> {
        let (policy, clock) = (&self.inner.policy, &self.inner.clock);
        let lookup = match self.inner.hot.get(name.key()).await {
            Some(entry) if entry.is_fresh(clock) => {
                let outcome = if entry.is_stale() {
                    CacheOutcome::Stale
                } else {
                    CacheOutcome::Hit
                };
                IndexLookup { entry, outcome }
            }
            Some(entry) if entry.within_max_stale(policy, clock) => {
                self.serve_while_updating(name, entry)
            }
            Some(_) => self.refresh(name, false, Origin::Client).await?,
            // Not in memory (evicted, or a restart): sled may hold a copy that
            // can be served while it is refreshed.
            None => match self.inner.stored(name.key()).await? {
                Some(loaded)
                    if loaded.is_fresh(clock) || loaded.within_max_stale(policy, clock) =>
                {
                    // A fetch may have put a newer copy in memory while sled
                    // was read: that one wins (it carries the prefetch mark).
                    let counted = Arc::clone(&loaded);
                    let held = self
                        .inner
                        .hot
                        .entry(name.key().to_string())
                        .or_insert(loaded)
                        .await;
                    if held.is_fresh() {
                        self.inner.count_held(name.key(), &counted);
                    }
                    let entry = held.into_value();
                    if entry.is_fresh(clock) {
                        IndexLookup {
                            entry,
                            outcome: CacheOutcome::Hit,
                        }
                    } else {
                        self.serve_while_updating(name, entry)
                    }
                }
                _ => self.refresh(name, false, Origin::Client).await?,
            },
        };
        let lookup = if lookup.entry.file().is_some_and(|file| file.is_due(clock)) {
            self.come_of_age(name, lookup).await?
        } else {
            lookup
        };
        let metrics = &self.inner.metrics;
        if lookup.entry.take_prefetched() {
            metrics.prefetch.useful.inc();
        }
        metrics
            .index
            .lookups
            .with_label_values(&[lookup.outcome.label()])
            .inc();
        if !lookup.entry.is_found() && lookup.outcome == CacheOutcome::Hit {
            metrics.index.negative_hits.inc();
        }
        Ok(lookup)
    }

    /// The deny rule (as written) that refuses this version, if any.
    pub fn denied_by(&self, name: &str, version: &str) -> Option<String> {
        let policy = self.inner.supply.as_ref()?;
        policy
            .denied_by(name, version)
            .map(|rule| rule.as_str().to_string())
    }

    /// Filters `lookup`'s file again now that a held-back version has come
    /// of age: a new served body and ETag, in memory (the stored record, the
    /// upstream's body, is unchanged). Once per coming-of-age: requests at
    /// that instant join one single flight with the crate's refreshes.
    async fn come_of_age(
        &self,
        name: &CrateName,
        lookup: IndexLookup,
    ) -> Result<IndexLookup, IndexError> {
        let inner = self.inner.clone();
        let key = name.key().to_string();
        let (result, _) = self
            .flights
            .run(key.clone(), move || async move {
                // Another flight may have replaced the file meanwhile.
                let entry = inner.hot.get(&key).await.unwrap_or(lookup.entry);
                let due = entry.file().is_some_and(|file| file.is_due(&inner.clock));
                let Some(policy) = inner.supply.clone().filter(|_| due) else {
                    return Ok(IndexLookup {
                        entry,
                        outcome: lookup.outcome,
                    });
                };
                let now = inner.clock.system_now();
                let owned = entry.clone();
                let file = blocking(move || {
                    owned
                        .file()
                        .map(|file| file.refiltered(&policy, now))
                        .transpose()
                })
                .await?;
                let Some(file) = file else {
                    return Ok(IndexLookup {
                        entry,
                        outcome: lookup.outcome,
                    });
                };
                Ok(inner
                    .remember(&key, IndexEntry::Found(file), lookup.outcome)
                    .await)
            })
            .await;
        result?
    }

    /// Answers with an expired copy and starts its refresh in the background,
    /// once per copy (later clients get the same copy until the refresh
    /// replaces it; a client asking past `index-max-stale` joins the refresh).
    fn serve_while_updating(&self, name: &CrateName, entry: Arc<IndexEntry>) -> IndexLookup {
        let first = entry
            .file()
            .is_some_and(|file| !file.refreshing.swap(true, Ordering::Relaxed));
        if first {
            let this = self.clone();
            let name = name.clone();
            // Short-lived: it only waits for the single flight, which runs as
            // its own task and ends with the upstream's timeout at the latest.
            tokio::spawn(async move {
                if let Err(err) = this.refresh(&name, false, Origin::Revalidation).await {
                    tracing::warn!(krate = name.key(), error = %err, "background refresh failed");
                }
            });
        }
        IndexLookup {
            entry,
            outcome: CacheOutcome::Updating,
        }
    }

    /// Asks the upstream even if the cached copy is fresh (used when a download
    /// names a version the cached copy does not have yet), unless that was done
    /// for this crate within the revalidate interval and the file has not
    /// changed since: then the cached copy is the answer (outcome `Hit`), so a
    /// version still missing is remembered as missing, like a negative entry.
    pub async fn revalidate(&self, name: &CrateName) -> Result<IndexLookup, IndexError> {
        self.refresh(name, true, Origin::Revalidation).await
    }

    /// The one way to a new answer for `name`: the copy held when it is fresh
    /// (and, when forced, revalidated recently enough), else the upstream's.
    /// Runs once per crate however many ask at once; the others join it.
    async fn refresh(
        &self,
        name: &CrateName,
        force: bool,
        origin: Origin,
    ) -> Result<IndexLookup, IndexError> {
        let inner = self.inner.clone();
        let name = name.clone();
        let (result, role) = self
            .flights
            .run(name.key().to_string(), move || async move {
                let key = name.key();
                let current = inner.current(key).await?;
                if let Some(held) = inner.held_answer(key, current.as_ref(), force).await {
                    return Ok(held);
                }
                if let Origin::Prefetch(_) = origin {
                    inner.metrics.prefetch.started.inc();
                }
                if current
                    .as_ref()
                    .and_then(|entry| entry.file())
                    .is_some_and(|file| file.prefetched.load(Ordering::Relaxed))
                {
                    // Prefetched, never asked for, and now expired.
                    inner.metrics.prefetch.wasted.inc();
                }
                let result = inner.fetch(&name, current, origin).await;
                if force {
                    inner.note_forced(key, &result).await;
                }
                result
            })
            .await;
        if role == Role::Joined {
            self.inner
                .metrics
                .upstream
                .coalesced_waits
                .with_label_values(&["index"])
                .inc();
        }
        result?
    }
}

impl Inner {
    /// Puts `entry` in memory, counting it (see `plain_held` and `held`).
    async fn hold(&self, key: &str, entry: Arc<IndexEntry>) {
        self.count_held(key, &entry);
        self.hot.insert(key.to_string(), entry).await;
    }

    /// Counts an entry going into `hot` (the eviction listener takes it off).
    fn count_held(&self, key: &str, entry: &IndexEntry) {
        self.plain_held
            .fetch_add(entry.plain_len(), Ordering::Relaxed);
        self.held
            .fetch_add(u64::from(entry.weight_under(key)), Ordering::Relaxed);
    }

    async fn plain_of(&self, entry: &Arc<IndexEntry>) -> Result<Bytes, IndexError> {
        let Some(file) = entry.file() else {
            return Ok(Bytes::new());
        };
        if let Some(plain) = self.plain_bodies.get(&file.etag).await {
            return Ok(plain);
        }
        let owned = entry.clone();
        let plain = blocking(move || match owned.file() {
            Some(file) => file.decompress(),
            None => Ok(Bytes::new()),
        })
        .await?;
        self.plain_bodies
            .insert(file.etag.clone(), plain.clone())
            .await;
        Ok(plain)
    }

    async fn current(&self, key: &str) -> Result<Option<Arc<IndexEntry>>, IndexError> {
        if let Some(entry) = self.hot.get(key).await {
            return Ok(Some(entry));
        }
        self.stored(key).await
    }

    /// The copy in sled, if any. A record that is damaged (not a record of
    /// ours, or one sled cannot read) is logged with its crate, counted,
    /// removed and treated as absent: the file is fetched again, once,
    /// rather than every lookup failing on it.
    async fn stored(&self, key: &str) -> Result<Option<Arc<IndexEntry>>, IndexError> {
        let store = self.store.clone();
        let owned = key.to_string();
        let ttl = self.policy.ttl;
        let clock = self.clock.clone();
        let supply = self.supply.clone();
        let loaded = blocking(move || {
            let load = || -> Result<Option<IndexFile>, StoreError> {
                let Some(stored) = store.load_compressed(&owned)? else {
                    return Ok(None);
                };
                let written_plain = !stored.header.gzip;
                let file = IndexFile::from_stored(stored, &owned, ttl, &clock)?;
                if written_plain {
                    // From an earlier version: stored gzip'd from now on.
                    store.save(&owned, &file.to_stored())?;
                }
                let Some(policy) = supply else {
                    return Ok(Some(file));
                };
                let plain = gunzip(&file.gzip, file.plain_len)
                    .ok_or_else(|| StoreError::Corrupt(owned.clone()))?;
                let served = served_under(&plain, &policy, clock.system_now());
                Ok(Some(file.serving(served)))
            };
            match load() {
                Ok(file) => Ok(Ok(file)),
                Err(err) if err.is_damage() => {
                    // Best effort: if sled cannot remove it either, the
                    // refetched copy's save replaces it.
                    let _ = store.remove(&owned);
                    Ok(Err(err))
                }
                Err(err) => Err(err.into()),
            }
        })
        .await?;
        let entry = match loaded {
            Ok(file) => file.map(IndexEntry::Found),
            Err(err) => {
                let reason = match err {
                    StoreError::Corrupt(_) => "undecodable",
                    StoreError::Sled(_) => "unreadable",
                };
                self.metrics
                    .index
                    .records_lost
                    .with_label_values(&[reason])
                    .inc();
                tracing::warn!(
                    krate = %key,
                    reason,
                    error = %err,
                    "index file lost from the damaged database: fetched again from the upstream"
                );
                None
            }
        };
        if entry.is_some() {
            self.metrics.index.store_loads.inc();
        }
        Ok(entry.map(Arc::new))
    }

    /// Puts a new copy in memory, then writes it to sled (off the async
    /// threads). In that order: a client asking while sled is written must
    /// find this copy (with its prefetch mark) in memory, not load the
    /// half-known one from sled and put it in memory over this one. If sled
    /// fails, the copy leaves memory too and the error is the answer.
    async fn keep(
        &self,
        key: &str,
        file: IndexFile,
        outcome: CacheOutcome,
    ) -> Result<IndexLookup, IndexError> {
        let record = file.to_stored();
        let lookup = self.remember(key, IndexEntry::Found(file), outcome).await;
        let store = self.store.clone();
        let owned = key.to_string();
        if let Err(err) = blocking(move || Ok(store.save(&owned, &record)?)).await {
            self.hot.invalidate(key).await;
            return Err(err);
        }
        Ok(lookup)
    }

    async fn remember(&self, key: &str, entry: IndexEntry, outcome: CacheOutcome) -> IndexLookup {
        let entry = Arc::new(entry);
        self.hold(key, entry.clone()).await;
        IndexLookup { entry, outcome }
    }

    /// The copy held, as the answer, when it is fresh and either not forced
    /// or forced again too soon (see `recently_forced`); it is put back in
    /// memory, since it may have come from sled.
    async fn held_answer(
        &self,
        key: &str,
        current: Option<&Arc<IndexEntry>>,
        force: bool,
    ) -> Option<IndexLookup> {
        let entry = current?;
        if !entry.is_fresh(&self.clock) || (force && !self.recently_forced(key, entry).await) {
            return None;
        }
        self.hold(key, entry.clone()).await;
        Some(IndexLookup {
            entry: entry.clone(),
            outcome: CacheOutcome::Hit,
        })
    }

    /// Remembers a forced revalidation of `key` and the file it left, whatever
    /// its outcome: an upstream that fails must not be asked again by every
    /// request either.
    async fn note_forced(&self, key: &str, result: &Result<IndexLookup, IndexError>) {
        if self.revalidate_interval.is_zero() {
            return;
        }
        let etag = match result {
            Ok(lookup) => lookup.entry.file().map(|file| file.etag.clone()),
            Err(_) => None,
        };
        let forced = Forced {
            at: self.clock.now(),
            etag,
        };
        self.forced.insert(key.to_string(), forced).await;
    }

    /// Tells the prefetcher (if any) that `name` just came from the upstream.
    fn announce(&self, name: &CrateName, body: Bytes, origin: Origin) {
        if let Some(fetched) = self.fetched.get() {
            let depth = match origin {
                Origin::Client | Origin::Revalidation => 0,
                Origin::Prefetch(depth) => depth,
            };
            let _ = fetched.send(FetchedIndex {
                name: name.clone(),
                body,
                depth,
            });
        }
    }

    /// Whether `key` was revalidated by force within the interval and `entry`
    /// is still the file that revalidation left.
    async fn recently_forced(&self, key: &str, entry: &IndexEntry) -> bool {
        if self.revalidate_interval.is_zero() {
            return false;
        }
        let now = self.clock.now();
        self.forced.get(key).await.is_some_and(|forced| {
            now.saturating_duration_since(forced.at) < self.revalidate_interval
                && (forced.etag.is_none()
                    || forced.etag.as_deref() == entry.file().map(|file| file.etag.as_str()))
        })
    }

    /// Asks the upstream for `name` (conditionally when `current` has
    /// validators) and stores what it answered.
    async fn fetch(
        &self,
        name: &CrateName,
        current: Option<Arc<IndexEntry>>,
        origin: Origin,
    ) -> Result<IndexLookup, IndexError> {
        let key = name.key();
        let previous = current.as_deref().and_then(IndexEntry::file);
        let validators = previous
            .map(|file| file.upstream.clone())
            .unwrap_or_default();
        let ttl = self.policy.ttl;
        let clock = &self.clock;
        let now = clock.system_now();
        let fetched = match self
            .upstream
            .fetch_index(&name.index_path(), &validators, origin.label())
            .await
        {
            Ok(IndexFetch::Modified { body, validators }) => {
                let owned = key.to_string();
                let supply = self.supply.clone();
                blocking(move || Ok(prepare(body, &owned, supply.as_deref(), now)))
                    .await?
                    .map(|prepared| Answer::Changed(prepared, validators))
            }
            Ok(IndexFetch::NotModified { validators }) => Ok(Answer::NotModified(validators)),
            Ok(IndexFetch::Missing { status }) => Ok(Answer::Missing(status)),
            Err(err) => Err(err),
        };
        match fetched {
            Ok(Answer::Changed(prepared, validators)) => {
                let Prepared {
                    plain: upstream_body,
                    gzip,
                    upstream_gzip,
                    etag,
                    served,
                } = prepared;
                // Changed or not as the upstream's body is; the served body
                // may differ for a version come of age meanwhile.
                let same = |old: &IndexFile| old.upstream_body().2 == etag;
                let (changed_at, outcome) = match previous {
                    Some(old) if same(old) && old.etag == served_etag(&served, &etag) => {
                        (old.changed_at, CacheOutcome::Revalidated)
                    }
                    Some(_) => (now, CacheOutcome::Revalidated),
                    None => (now, CacheOutcome::Miss),
                };
                let changed = !matches!(previous, Some(old) if same(old));
                let freshness = Freshness::since(validators, now, ttl, clock);
                let body = served
                    .as_ref()
                    .map_or_else(|| upstream_body.clone(), |served| served.plain.clone());
                let mut file = IndexFile::new(
                    gzip,
                    upstream_body.len() as u64,
                    etag,
                    changed_at,
                    freshness,
                )
                .serving(served);
                if self.fetched.get().is_some() {
                    // The prefetcher walks this file's dependencies again when
                    // other files name it: a hop to decompress each time let
                    // cargo overtake it (gamedev's useful share fell from 87%
                    // to 67% in tests/prefetch.rs). Only with a prefetcher.
                    self.plain_bodies
                        .insert(file.etag.clone(), body.clone())
                        .await;
                }
                file.upstream_gzip = upstream_gzip;
                file.prefetched
                    .store(matches!(origin, Origin::Prefetch(_)), Ordering::Relaxed);
                let lookup = self.keep(key, file, outcome).await?;
                if changed {
                    self.changed.notify_one();
                }
                self.announce(name, body, origin);
                Ok(lookup)
            }
            Ok(Answer::NotModified(validators)) => {
                let Some(old) = previous else {
                    // A 304 to an unconditional request: the upstream is broken.
                    return Err(UpstreamError::from(Cause::Status(304)).into());
                };
                self.metrics.index.not_modified.inc();
                let validators = if validators.is_empty() {
                    old.upstream.clone()
                } else {
                    validators
                };
                let file = old.renewed(Freshness::since(validators, now, ttl, clock));
                let lookup = self.keep(key, file, CacheOutcome::Revalidated).await?;
                // Confirmed unchanged is as good as fetched for the prefetcher:
                // after the TTL its dependencies need revalidating too.
                if self.fetched.get().is_some() {
                    if let Some(entry) = current.as_ref() {
                        self.announce(name, self.plain_of(entry).await?, origin);
                    }
                }
                Ok(lookup)
            }
            Ok(Answer::Missing(status)) => {
                let store = self.store.clone();
                let owned = key.to_string();
                if blocking(move || Ok(store.remove(&owned)?)).await? {
                    self.changed.notify_one();
                }
                let entry = IndexEntry::missing(status, self.policy.negative_ttl, clock);
                Ok(self.remember(key, entry, CacheOutcome::Miss).await)
            }
            Err(err) => {
                let Some(old) = previous else {
                    return Err(err.into());
                };
                tracing::warn!(krate = key, error = %err, "upstream failed; serving stale index file");
                let file = old.renewed(Freshness {
                    upstream: old.upstream.clone(),
                    fetched_at: old.fetched_at,
                    expires_at: clock.now() + ttl.min(STALE_RETRY),
                    stale: true,
                });
                let entry = IndexEntry::Found(file);
                Ok(self.remember(key, entry, CacheOutcome::Stale).await)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_keep_their_cause_in_every_clone() {
        let err = IndexError::from(StoreError::Corrupt("se/rd/serde".into()));
        let theirs = err.clone();
        let source = |err: &IndexError| {
            std::error::Error::source(err)
                .and_then(|source| source.downcast_ref::<Arc<StoreError>>())
                .expect("the store error is the source")
                .clone()
        };
        let store = source(&err);
        assert!(matches!(&*store, StoreError::Corrupt(key) if key == "se/rd/serde"));
        // A waiter's clone shares the very error, not a copy of its text.
        assert!(Arc::ptr_eq(&store, &source(&theirs)));
        assert_eq!(
            err.to_string(),
            "index storage: corrupt index record for se/rd/serde"
        );
    }

    #[tokio::test]
    async fn failed_background_work_keeps_its_cause() {
        let err = blocking(|| -> Result<(), IndexError> { panic!("decoder bug") })
            .await
            .expect_err("the work panicked");
        let cause = std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<Arc<tokio::task::JoinError>>())
            .expect("the join error is the source");
        assert!(cause.is_panic());
    }

    #[test]
    fn etags_depend_on_the_body_only() {
        assert_eq!(etag_of(b"abc"), etag_of(b"abc"));
        assert_ne!(etag_of(b"abc"), etag_of(b"abd"));
        assert!(etag_of(b"").starts_with('"'));
    }

    /// A found entry for `body`, fetched at `fetched_at`, with `ttl`.
    fn file(body: &Bytes, fetched_at: SystemTime, ttl: Duration, clock: &Clock) -> IndexEntry {
        let freshness = Freshness::since(Validators::default(), fetched_at, ttl, clock);
        IndexEntry::Found(IndexFile::new(
            gzip(body),
            body.len() as u64,
            etag_of(body),
            fetched_at,
            freshness,
        ))
    }

    /// What `IndexStore::load_compressed` gives for a file saved as `stored`.
    fn as_loaded(stored: StoredIndex) -> CompressedIndex {
        let mut header = stored.header;
        header.gzip = stored.gzip.is_some();
        CompressedIndex {
            header,
            stored: stored.gzip.unwrap_or(stored.body),
        }
    }

    #[test]
    fn only_the_gzip_body_is_held_and_lines_are_read_from_it() {
        let clock = Clock::system();
        let lines: String = (0..200)
            .map(|n| format!("{{\"name\":\"a\",\"vers\":\"1.{n}.0\",\"cksum\":\"{n:064x}\"}}\n"))
            .collect();
        let body = Bytes::from(lines);
        let entry = file(&body, clock.system_now(), Duration::from_secs(60), &clock);
        let found = entry.file().unwrap();
        assert_eq!(found.plain_len(), body.len() as u64);
        assert!(
            entry.weight() < (body.len() / 4) as u32,
            "compressed bytes are weighed"
        );
        assert_eq!(found.decompress().unwrap(), body);
        let record = found.find_version("1.150.0").unwrap();
        assert_eq!(record.cksum, format!("{:064x}", 150));
        assert!(found.find_version("9.9.9").is_none());
    }

    #[test]
    fn records_without_a_plain_length_or_written_plain_are_read() {
        let clock = Clock::system();
        let body = Bytes::from_static(b"{\"name\":\"a\",\"vers\":\"1.0.0\"}\n");
        let entry = file(&body, clock.system_now(), Duration::from_secs(60), &clock);
        let ttl = Duration::from_secs(60);
        // As the previous release wrote it: gzip, no plain length.
        let mut loaded = as_loaded(entry.file().unwrap().to_stored());
        loaded.header.plain_len = None;
        let file = IndexFile::from_stored(loaded, "a", ttl, &clock).unwrap();
        assert_eq!(file.plain_len(), body.len() as u64);
        // As earlier releases wrote it: plain.
        let mut loaded = as_loaded(entry.file().unwrap().to_stored());
        loaded.header.gzip = false;
        loaded.header.plain_len = None;
        loaded.stored = body.clone();
        let file = IndexFile::from_stored(loaded, "a", ttl, &clock).unwrap();
        assert_eq!(file.decompress().unwrap(), body);
        // A gzip body that does not decompress is a corrupt record.
        let mut loaded = as_loaded(entry.file().unwrap().to_stored());
        loaded.header.plain_len = None;
        loaded.stored = Bytes::from_static(b"\x1f\x8b not gzip");
        assert!(IndexFile::from_stored(loaded, "a", ttl, &clock).is_err());
    }

    #[test]
    fn gzip_body_decodes_to_the_body() {
        use std::io::Read;
        let clock = Clock::system();
        let body = Bytes::from_static(b"{\"name\":\"a\",\"vers\":\"1.0.0\"}\n");
        let entry = file(&body, clock.system_now(), Duration::from_secs(60), &clock);
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&entry.file().unwrap().gzip_body()[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, body);
        assert!(entry.is_fresh(&clock));
    }

    #[test]
    fn stored_entries_keep_their_age() {
        let clock = Clock::system();
        let body = Bytes::from_static(b"x\n");
        let old = clock.system_now() - Duration::from_secs(120);
        let entry = file(&body, old, Duration::from_secs(60), &clock);
        assert!(!entry.is_fresh(&clock));
        let stored = as_loaded(entry.file().unwrap().to_stored());
        let restored =
            IndexFile::from_stored(stored, "x", Duration::from_secs(600), &clock).unwrap();
        let entry = entry.file().unwrap();
        assert_eq!(restored.etag, entry.etag);
        assert_eq!(restored.last_modified, entry.last_modified);
        assert!(IndexEntry::Found(restored).is_fresh(&clock));
    }

    #[test]
    fn entries_expire_when_the_clock_passes_their_ttl() {
        let clock = Clock::movable();
        let body = Bytes::from_static(b"x\n");
        let found = file(&body, clock.system_now(), Duration::from_secs(60), &clock);
        let missing = IndexEntry::missing(404, Duration::from_secs(30), &clock);
        let policy = IndexPolicy {
            ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(30),
            hot_cache_bytes: 1 << 20,
        };
        assert!(found.is_fresh(&clock) && missing.is_fresh(&clock));
        clock.advance(Duration::from_secs(31));
        assert!(found.is_fresh(&clock) && !missing.is_fresh(&clock));
        clock.advance(Duration::from_secs(30));
        assert!(!found.is_fresh(&clock));
        assert!(found.within_max_stale(&policy, &clock));
        assert!(!missing.within_max_stale(&policy, &clock));
        clock.advance(Duration::from_secs(600));
        assert!(!found.within_max_stale(&policy, &clock));
    }
}
