//! `UpstreamClient`: everything the mirror asks of the upstream registry goes
//! through here — its `config.json` (for the `dl` template and the `api` base),
//! conditional index fetches, streamed `.crate` downloads and read-only web API
//! calls — so timeouts live in one place.
//!
//! Redirects are followed only to the upstream's own hosts (the index base URL,
//! the `dl` template and the `api` base) and to hosts the operator listed, at most
//! `MAX_REDIRECTS` of them: anything else would let the upstream (or whoever
//! controls a redirect) make the mirror fetch from, and serve, any server it
//! can reach, the mirror's own network included.

use std::io::Read;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use crate::blocking::off_async;
use crate::resilience::{backoff_delay, parse_retry_after, CircuitBreaker};

use crate::index::path::prefix;
use crate::metrics::Metrics;

/// Attempts per idempotent request (the first try and two retries).
const MAX_ATTEMPTS: u32 = 3;
/// The largest index file accepted from the upstream; real ones are a few hundred KB.
const MAX_INDEX_BYTES: usize = 32 << 20;
/// The largest web API answer accepted from the upstream: one crate's
/// metadata lists every version, a few MB for the crates with thousands.
const MAX_API_BYTES: usize = 8 << 20;
/// Redirects followed per request; more is refused like a redirect elsewhere.
pub const MAX_REDIRECTS: usize = 5;

/// Why the upstream could not be used, as a class a cargo user can act on:
/// what the mirror's 5xx bodies and its ERROR line name. Never a library's
/// error text, which carries the request's URL (and so any credentials in it)
/// and means little to whoever reads cargo's output.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Cause {
    #[error("dns: its host name does not resolve")]
    Dns,
    #[error("connection refused")]
    ConnectionRefused,
    #[error("cannot connect")]
    Connect,
    #[error("tls: the TLS handshake failed (is its certificate trusted? does it speak TLS?)")]
    Tls,
    #[error("timeout")]
    Timeout,
    /// An answer that is not HTTP, or a connection dropped mid-exchange.
    #[error("broken HTTP exchange")]
    Protocol,
    #[error("http {0}")]
    Status(u16),
    #[error("the body broke off")]
    Body,
    #[error("invalid config.json: {0}")]
    InvalidConfig(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid index file: {0}")]
    InvalidIndex(String),
    #[error("redirect refused: {0}")]
    RedirectRefused(RedirectRefusal),
    /// The breaker is open; the cause of the failures that opened it, when known.
    #[error("circuit open after repeated failures{}; not asking it for a while", .0.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    CircuitOpen(Option<Box<Cause>>),
    /// The mirror runs `--offline`: nothing is asked of any upstream.
    #[error("this mirror is offline: it serves only what it has cached or imported")]
    Offline,
    /// The HTTP client could not be built (at start only; no client sees it).
    #[error("HTTP client: {0}")]
    Setup(String),
}

impl Cause {
    /// The class of a failed request, from reqwest's error and its source
    /// chain (hyper's, hyper-util's, the socket's and rustls's errors).
    fn of_reqwest(err: &reqwest::Error) -> Self {
        if err.is_redirect() {
            // The policy's own refusal is the source; reqwest's text names the URL.
            let refusal = std::error::Error::source(err)
                .and_then(|source| source.downcast_ref::<RedirectRefusal>())
                .copied()
                .unwrap_or(RedirectRefusal::Host);
            return Cause::RedirectRefused(refusal);
        }
        if err.is_timeout() {
            return Cause::Timeout;
        }
        let mut link: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(error) = link {
            // hyper-util's connector reports a failed lookup as its own
            // (private) error type, whose text is this and nothing else.
            if error.to_string() == "dns error" {
                return Cause::Dns;
            }
            if error.is::<rustls::Error>() {
                return Cause::Tls;
            }
            link = match error.downcast_ref::<std::io::Error>() {
                Some(io) => match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return Cause::ConnectionRefused,
                    std::io::ErrorKind::TimedOut => return Cause::Timeout,
                    // An io::Error's `source` is that of the error it wraps,
                    // skipping the error itself (rustls's, wrapped twice
                    // by the TLS connector): look in instead.
                    _ => io
                        .get_ref()
                        .map(|inner| inner as &(dyn std::error::Error + 'static)),
                },
                None => error.source(),
            };
        }
        if err.is_connect() {
            Cause::Connect
        } else if err.is_body() || err.is_decode() {
            Cause::Body
        } else {
            Cause::Protocol
        }
    }

    /// Whether two failures are of one class (one ERROR line covers both).
    fn same_class(&self, other: &Cause) -> bool {
        match (self, other) {
            (Cause::Status(a), Cause::Status(b)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// An upstream failure: its cause and which upstream (its URL without user
/// information), as a client is told. `Clone` so that one fetch's result can
/// be shared by every request that waited for it.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    cause: Cause,
    /// `None` for failures found outside the client (an index file that
    /// does not validate).
    upstream: Option<Arc<str>>,
}

impl UpstreamError {
    pub fn cause(&self) -> &Cause {
        &self.cause
    }
}

impl From<Cause> for UpstreamError {
    fn from(cause: Cause) -> Self {
        Self {
            cause,
            upstream: None,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.cause, &self.upstream) {
            // Not a failure of the upstream: there is none to ask.
            (Cause::Offline, _) => write!(f, "{}", self.cause),
            (cause, Some(upstream)) => write!(f, "upstream {upstream} failed: {cause}"),
            (cause, None) => write!(f, "upstream failed: {cause}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Why a redirect was refused, as far as a client is told: the target is
/// logged where the redirect is decided (`RedirectRules::decide`), and named
/// nowhere else, as it may be a service on the upstream's network that the
/// client has no business learning of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectRefusal {
    #[error("the upstream redirected more than {MAX_REDIRECTS} times")]
    TooMany,
    #[error("the upstream redirected to a host not allowed by upstream-redirect-hosts")]
    Host,
}

/// The upstream's validators for one index file, sent back on revalidation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        Validators {
            etag: text(ETAG),
            last_modified: text(LAST_MODIFIED),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// An index file's body as the upstream sent it.
#[derive(Debug, Clone)]
pub enum IndexBody {
    Plain(Bytes),
    /// Sent with `Content-Encoding: gzip`: kept as sent, so that clients who
    /// accept gzip (cargo always does) get these bytes without the mirror
    /// compressing the file again.
    Gzip(Bytes),
}

/// An index body ready to cache: the plain bytes (what is validated, hashed
/// and read) and the gzip bytes to serve, when the upstream sent usable ones.
#[derive(Debug, Clone)]
pub struct DecodedIndex {
    pub plain: Bytes,
    pub gzip: Option<Bytes>,
}

impl IndexBody {
    /// Decompresses a gzip body (at most `MAX_INDEX_BYTES` of output, so a
    /// small bomb cannot fill memory). CPU work: callers on an async runtime
    /// run it on a blocking thread.
    pub fn decode(self) -> Result<DecodedIndex, UpstreamError> {
        let raw = match self {
            IndexBody::Plain(plain) => return Ok(DecodedIndex { plain, gzip: None }),
            IndexBody::Gzip(raw) => raw,
        };
        let mut decoder = flate2::bufread::GzDecoder::new(&raw[..]);
        let mut plain = Vec::with_capacity(raw.len().saturating_mul(8).min(MAX_INDEX_BYTES));
        let read = (&mut decoder)
            .take(MAX_INDEX_BYTES as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|e| Cause::InvalidIndex(format!("gzip: {e}")))?;
        if read > MAX_INDEX_BYTES {
            return Err(Cause::TooLarge(MAX_INDEX_BYTES).into());
        }
        // Bytes after the first gzip member (a second member, or junk) are
        // not passed on: a client's decoder might read them differently.
        let whole = decoder.into_inner().is_empty();
        Ok(DecodedIndex {
            plain: exact(plain),
            gzip: whole.then_some(raw),
        })
    }
}

/// The outcome of an index fetch that reached the upstream.
#[derive(Debug)]
pub enum IndexFetch {
    Modified {
        body: IndexBody,
        validators: Validators,
    },
    NotModified {
        validators: Validators,
    },
    /// 404, 410 or 451: the crate does not exist (or may not be served).
    Missing {
        status: u16,
    },
}

/// The bytes of a `.crate` as they come from the upstream.
pub type DownloadBody = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// A `.crate` body on its way from the upstream.
pub struct DownloadStream {
    pub content_length: Option<u64>,
    pub body: DownloadBody,
}

/// What a download request got back.
pub enum DownloadStart {
    Found(DownloadStream),
    Missing,
}

/// `UpstreamClient::config_fetch`: no fetch yet, the last succeeded, it failed.
const CONFIG_FETCH_NEVER: u8 = 0;
const CONFIG_FETCH_OK: u8 = 1;
const CONFIG_FETCH_FAILED: u8 = 2;

/// The parts of the upstream's `config.json` the mirror uses (also what is
/// kept of it in sled, see `UpstreamClient::restore_config`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UpstreamConfig {
    pub dl: String,
    /// The base of the upstream's web API, when it has one (copies kept by
    /// earlier versions have none: they are refreshed at first use anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

/// What a read-only web API request got back.
#[derive(Debug)]
pub enum ApiFetch {
    /// 200, with the body as sent (at most `MAX_API_BYTES`).
    Found(Bytes),
    /// 404: no such crate.
    Missing,
    /// The upstream's config.json names no `api`: there is nothing to ask.
    NoApi,
}

const MARKERS: [&str; 5] = [
    "{crate}",
    "{version}",
    "{prefix}",
    "{lowerprefix}",
    "{sha256-checksum}",
];

impl UpstreamConfig {
    /// The download URL of one version, following cargo's rules for `dl`: the
    /// markers are substituted, and without any marker `/{crate}/{version}/download`
    /// is appended.
    pub fn download_url(&self, name: &str, version: &str, cksum: &str) -> String {
        if !MARKERS.iter().any(|m| self.dl.contains(m)) {
            return format!(
                "{}/{}/{}/download",
                self.dl.trim_end_matches('/'),
                name,
                version
            );
        }
        self.dl
            .replace("{crate}", name)
            .replace("{version}", version)
            .replace("{prefix}", &prefix(name))
            .replace("{lowerprefix}", &prefix(&name.to_ascii_lowercase()))
            .replace("{sha256-checksum}", cksum)
    }
}

/// A host that redirects may lead to: a lowercase name and, when fixed, a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    host: String,
    /// `None`: any port (a listed host given without one).
    port: Option<u16>,
}

impl AllowedHost {
    /// The host and port of `url` (its scheme's default port when none is given).
    fn of_url(url: &reqwest::Url) -> Option<Self> {
        Some(Self {
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default(),
        })
    }

    /// A `host` or `host:port` setting, as `Config::upstream_redirect_hosts` holds them.
    fn from_setting(setting: &str) -> Option<Self> {
        let url = reqwest::Url::parse(&format!("http://{setting}/")).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        // `Url` drops a port equal to the scheme's default, so look at the text.
        let port = match setting.rsplit_once(':') {
            Some((_, port)) if !setting.ends_with(']') => Some(port.parse().ok()?),
            _ => None,
        };
        Some(Self { host, port })
    }

    fn admits(&self, url: &reqwest::Url) -> bool {
        url.host_str()
            .is_some_and(|host| host.eq_ignore_ascii_case(&self.host))
            && self
                .port
                .is_none_or(|port| url.port_or_known_default() == Some(port))
    }
}

/// Where the upstream's redirects may lead: shared by the HTTP clients' redirect
/// policy and the client, which learns the `dl` host from config.json.
struct RedirectRules {
    /// The index base URL's host.
    base: Option<AllowedHost>,
    /// The hosts of the `dl` template and of the `api` base, once config.json
    /// has been read.
    config_hosts: RwLock<Vec<AllowedHost>>,
    /// Hosts the operator listed.
    listed: RwLock<Vec<AllowedHost>>,
    metrics: Arc<Metrics>,
}

/// Whether a host held in `hosts` admits `url`. A poisoned lock is read all
/// the same: its hosts are only ever replaced whole.
fn any_admits<H>(hosts: &RwLock<H>, url: &reqwest::Url) -> bool
where
    for<'a> &'a H: IntoIterator<Item = &'a AllowedHost>,
{
    (&*hosts.read().unwrap_or_else(PoisonError::into_inner))
        .into_iter()
        .any(|h| h.admits(url))
}

impl RedirectRules {
    fn admits(&self, url: &reqwest::Url) -> bool {
        self.base.iter().any(|h| h.admits(url))
            || any_admits(&self.config_hosts, url)
            || any_admits(&self.listed, url)
    }

    /// The decision on one redirect; refusals are counted and logged.
    fn decide(&self, attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
        // `previous` starts with the request's own URL.
        let (reason, refusal, why) = if attempt.previous().len() > MAX_REDIRECTS {
            (
                "too_many",
                RedirectRefusal::TooMany,
                format!("more than {MAX_REDIRECTS} redirects"),
            )
        } else if !self.admits(attempt.url()) {
            let to = attempt.url();
            let target = match to.port_or_known_default() {
                Some(port) => format!("{}:{port}", to.host_str().unwrap_or("")),
                None => to.host_str().unwrap_or("").to_string(),
            };
            ("host", RedirectRefusal::Host, format!("redirect to {target}, which is not an upstream host nor listed in upstream-redirect-hosts"))
        } else {
            return attempt.follow();
        };
        self.metrics
            .upstream
            .redirects_refused
            .with_label_values(&[reason])
            .inc();
        // The path only: a redirect's query may carry a signature.
        let from = attempt
            .previous()
            .last()
            .map(|url| format!("{}{}", url.origin().ascii_serialization(), url.path()))
            .unwrap_or_default();
        // The one place the target is named (see `RedirectRefusal`).
        tracing::warn!(%from, reason = %why, "upstream redirect refused");
        attempt.error(refusal)
    }
}

pub struct UpstreamClient {
    base: String,
    /// `base` without its user information: what logs and clients are told.
    shown: Arc<str>,
    redirects: Arc<RedirectRules>,
    /// One client (one connection pool) for config.json, index files and
    /// downloads, so a download from the index's host reuses the HTTP/2
    /// connection the index opened. It decodes nothing: index files arrive
    /// gzip'd and are kept so, downloads are hashed as they are served. It has
    /// no timeout of its own: each request says how it is bounded (`Limit`).
    http: reqwest::Client,
    /// `upstream-timeout`: the whole of a config.json or index fetch; for a
    /// download, the wait for its head and each wait for more of its body.
    timeout: Duration,
    config_ttl: Duration,
    /// The config and when it was fetched (`None`: restored from sled, so due
    /// for a refresh at first use).
    config: Mutex<Option<(Arc<UpstreamConfig>, Option<Instant>)>>,
    /// The config in `config`, once one is known (fetched or restored),
    /// readable without waiting for a refresh under way.
    latest: RwLock<Option<Arc<UpstreamConfig>>>,
    /// How the last config.json fetch went: `CONFIG_FETCH_*`.
    config_fetch: AtomicU8,
    /// Where the last good config.json is kept, so a restart during an
    /// upstream outage still knows the `dl` template.
    config_store: Option<sled::Tree>,
    metrics: Arc<Metrics>,
    /// Bounds concurrent upstream requests (held until a body is fully read).
    permits: Arc<Semaphore>,
    /// For the registry: config.json, index files, downloads.
    registry: Service,
    /// For the web API alone: it is another service (often another host),
    /// and a failing search must not make index requests fail fast.
    api: Service,
    /// `--offline`: every request fails with `Offline` before it is made.
    offline: bool,
}

impl UpstreamClient {
    /// The client the settings describe: their timeouts, concurrency and
    /// redirect hosts; config.json is kept for the index TTL (at least 1s).
    pub fn from_config(
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamError> {
        let mut client = Self::new(
            config.upstream.clone(),
            config.connect_timeout,
            config.upstream_timeout,
            config.index_ttl.max(Duration::from_secs(1)),
            config.upstream_concurrency,
            metrics,
        )?
        .with_redirect_hosts(&config.upstream_redirect_hosts);
        client.offline = config.offline;
        Ok(client)
    }

    /// `base` is the index base URL ending in `/`; `timeout` bounds index fetches and
    /// each wait of a download (see `Limit`).
    pub fn new(
        base: String,
        connect_timeout: Duration,
        timeout: Duration,
        config_ttl: Duration,
        concurrency: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamError> {
        let user_agent = concat!("crate-mirror/", env!("CARGO_PKG_VERSION"));
        let redirects = Arc::new(RedirectRules {
            base: reqwest::Url::parse(&base)
                .ok()
                .and_then(|url| AllowedHost::of_url(&url)),
            config_hosts: RwLock::new(Vec::new()),
            listed: RwLock::new(Vec::new()),
            metrics: metrics.clone(),
        });
        let rules = redirects.clone();
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(connect_timeout)
            .gzip(false)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                rules.decide(attempt)
            }))
            .default_headers(headers)
            .build()
            .map_err(|e| Cause::Setup(e.to_string()))?;
        Ok(Self {
            shown: crate::config::mask_userinfo(&base).into(),
            base,
            redirects,
            http,
            timeout,
            config_ttl,
            config: Mutex::new(None),
            latest: RwLock::new(None),
            config_fetch: AtomicU8::new(CONFIG_FETCH_NEVER),
            config_store: None,
            metrics,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            registry: Service::default(),
            api: Service::default(),
            offline: false,
        })
    }

    /// Also follows redirects to `hosts` (`host` for any port, or `host:port`).
    pub fn with_redirect_hosts(self, hosts: &[String]) -> Self {
        let parsed = hosts
            .iter()
            .filter_map(|setting| {
                let host = AllowedHost::from_setting(setting);
                if host.is_none() {
                    tracing::warn!(%setting, "ignoring an upstream redirect host that is not a host name");
                }
                host
            })
            .collect();
        *self
            .redirects
            .listed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = parsed;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Keeps each config.json fetched in `tree` (see `restore_config`).
    pub fn with_config_store(mut self, tree: sled::Tree) -> Self {
        self.config_store = Some(tree);
        self
    }

    /// Takes the config.json a previous run kept, if any (and valid), as the
    /// current one: downloads then work from its `dl` while the upstream is
    /// unreachable. It is refreshed at first use, as an expired copy is.
    pub async fn restore_config(&self) {
        let Some(tree) = self.config_store.clone() else {
            return;
        };
        let key = self.config_key();
        let stored = off_async(move || tree.get(key)).await;
        let config = match stored {
            Ok(Some(bytes)) => serde_json::from_slice::<UpstreamConfig>(&bytes)
                .map_err(|e| Cause::InvalidConfig(e.to_string()))
                .and_then(|config| self.accept_config(config)),
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the stored upstream config.json");
                return;
            }
        };
        match config {
            Ok(config) => {
                let config = Arc::new(config);
                *self.config.lock().await = Some((config.clone(), None));
                self.set_latest(config);
            }
            Err(err) => tracing::warn!(error = %err, "ignoring the stored upstream config.json"),
        }
    }

    /// The upstream's config.json, fetched on first use and refreshed after the
    /// TTL; a failed refresh keeps the previous copy for another TTL. For a
    /// client's request: its failures count towards opening the circuit.
    pub async fn config(&self) -> Result<Arc<UpstreamConfig>, UpstreamError> {
        self.config_for(Asker::Client).await
    }

    /// `config` for the start-up fetch: its failures are logged and shown
    /// by `/ready` but do not open the circuit, so that the first client
    /// after an upstream that was down at start is still sent to it.
    pub async fn probe_config(&self) -> Result<Arc<UpstreamConfig>, UpstreamError> {
        self.config_for(Asker::Probe).await
    }

    async fn config_for(&self, asker: Asker) -> Result<Arc<UpstreamConfig>, UpstreamError> {
        let mut slot = self.config.lock().await;
        if self.offline {
            // A copy kept by an earlier, online run is all there is.
            return match slot.as_ref() {
                Some((config, _)) => Ok(config.clone()),
                None => Err(Cause::Offline.into()),
            };
        }
        if let Some((config, Some(at))) = slot.as_ref() {
            if at.elapsed() < self.config_ttl {
                return Ok(config.clone());
            }
        }
        let fetched = self.fetch_config(asker).await;
        match &fetched {
            Ok(_) => self.registry.answered(&self.shown),
            // The circuit's own refusal is no news of the upstream.
            Err(Cause::CircuitOpen(_)) => {}
            // Whatever else keeps config.json from the mirror says the
            // upstream is not the registry configured (a 404, a page that
            // is no config.json), even when it answered.
            Err(cause) => self.registry.failed(cause, &self.shown),
        }
        self.config_fetch.store(
            if fetched.is_ok() {
                CONFIG_FETCH_OK
            } else {
                CONFIG_FETCH_FAILED
            },
            Ordering::Relaxed,
        );
        match fetched {
            Ok(config) => {
                let config = Arc::new(config);
                *slot = Some((config.clone(), Some(Instant::now())));
                self.set_latest(config.clone());
                self.keep_config(&config).await;
                Ok(config)
            }
            Err(cause) => match slot.as_mut() {
                Some((config, at)) => {
                    tracing::warn!(upstream = %self.shown, cause = %cause, "upstream config.json refresh failed; keeping the previous copy");
                    // The copy serves for another TTL before the next try, so
                    // downloads during an outage neither wait for a failing
                    // fetch each nor open the circuit with its failures.
                    *at = Some(Instant::now());
                    Ok(config.clone())
                }
                None => Err(self.error(cause)),
            },
        }
    }

    /// Whether this client never asks the upstream (`--offline`).
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    fn set_latest(&self, config: Arc<UpstreamConfig>) {
        *self.latest.write().unwrap_or_else(PoisonError::into_inner) = Some(config);
    }

    /// The config.json known now, fetched or restored, however old (never waits).
    pub fn known_config(&self) -> Option<Arc<UpstreamConfig>> {
        self.latest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a config.json is known, fetched or restored (never waits).
    pub fn config_known(&self) -> bool {
        self.known_config().is_some()
    }

    /// The known config.json at once; when none is known yet (a new data dir
    /// whose first fetch has not answered), a fetch given at most `wait`, for
    /// answers that may go without it but had better not at first start.
    pub async fn config_within(&self, wait: Duration) -> Option<Arc<UpstreamConfig>> {
        if let Some(config) = self.known_config() {
            return Some(config);
        }
        // A probe: a client waits for it only so long, and the answer is optional.
        tokio::time::timeout(wait, self.config_for(Asker::Probe))
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Whether the last config.json fetch succeeded; `None` before the first.
    pub fn config_fetch_ok(&self) -> Option<bool> {
        match self.config_fetch.load(Ordering::Relaxed) {
            CONFIG_FETCH_OK => Some(true),
            CONFIG_FETCH_FAILED => Some(false),
            _ => None,
        }
    }

    /// The key of the kept config.json: per upstream, so a data dir moved to
    /// another upstream never downloads from the old one's `dl`.
    fn config_key(&self) -> Vec<u8> {
        format!("config.json {}", self.base).into_bytes()
    }

    /// Writes `config` to the store (off the async threads: sled blocks). A
    /// failure only costs the copy for the next start, so it is logged.
    async fn keep_config(&self, config: &UpstreamConfig) {
        let Some(tree) = self.config_store.clone() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(config) else {
            return;
        };
        let key = self.config_key();
        if let Err(err) = off_async(move || tree.insert(key, bytes)).await {
            tracing::warn!(error = %err, "cannot keep the upstream config.json");
        }
    }

    async fn fetch_config(&self, asker: Asker) -> Result<UpstreamConfig, Cause> {
        let url = format!("{}config.json", self.base);
        let ask = Ask {
            asker,
            ..Ask::client("config", Limit::WholeRequest)
        };
        let (response, _permit) = self.send_as(ask, || self.http.get(&url)).await?;
        if !response.status().is_success() {
            return Err(Cause::Status(response.status().as_u16()));
        }
        let body = read_limited(response, MAX_INDEX_BYTES).await?;
        let config: UpstreamConfig =
            serde_json::from_slice(&body).map_err(|e| Cause::InvalidConfig(e.to_string()))?;
        self.accept_config(config)
    }

    /// `cause` as a client is told it: with this upstream's URL.
    fn error(&self, cause: Cause) -> UpstreamError {
        UpstreamError {
            cause,
            upstream: Some(self.shown.clone()),
        }
    }

    /// Checks the `dl` template and the `api` base of a fetched or restored
    /// config and lets redirects reach their hosts. An `api` that is no
    /// http(s) URL is dropped (search then is not offered), not the config:
    /// downloads need only `dl`.
    fn accept_config(&self, mut config: UpstreamConfig) -> Result<UpstreamConfig, Cause> {
        let dl = reqwest::Url::parse(&config.dl.replace(['{', '}'], ""))
            .map_err(|e| Cause::InvalidConfig(format!("dl: {e}")))?;
        if !matches!(dl.scheme(), "http" | "https") {
            return Err(Cause::InvalidConfig("dl is not http(s)".into()));
        }
        let api = match config.api.as_deref().map(reqwest::Url::parse) {
            None => None,
            Some(Ok(api)) if matches!(api.scheme(), "http" | "https") => Some(api),
            Some(_) => {
                tracing::warn!(api = ?config.api, "ignoring the upstream's api: not an http(s) URL");
                config.api = None;
                None
            }
        };
        *self
            .redirects
            .config_hosts
            .write()
            .unwrap_or_else(PoisonError::into_inner) = [Some(&dl), api.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(AllowedHost::of_url)
            .collect();
        Ok(config)
    }

    /// Fetches one index file (`path` relative to the base, e.g. `se/rd/serde`),
    /// conditionally when validators are known.
    /// `origin` labels the request in the metrics (see `UPSTREAM_ORIGINS`).
    pub async fn fetch_index(
        &self,
        path: &str,
        validators: &Validators,
        origin: &str,
    ) -> Result<IndexFetch, UpstreamError> {
        self.index_exchange(path, validators, origin)
            .await
            .map_err(|cause| self.error(cause))
    }

    async fn index_exchange(
        &self,
        path: &str,
        validators: &Validators,
        origin: &str,
    ) -> Result<IndexFetch, Cause> {
        let url = format!("{}{}", self.base, path);
        let ask = Ask {
            origin,
            ..Ask::client("index", Limit::WholeRequest)
        };
        let (response, _permit) = self
            .send_as(ask, || {
                let mut request = self.http.get(&url).header(ACCEPT_ENCODING, "gzip");
                if let Some(etag) = &validators.etag {
                    request = request.header(IF_NONE_MATCH, etag);
                }
                if let Some(date) = &validators.last_modified {
                    request = request.header(IF_MODIFIED_SINCE, date);
                }
                request
            })
            .await?;
        let status = response.status();
        let fresh_validators = Validators::from_headers(response.headers());
        match status {
            StatusCode::OK => {
                let encoding = response
                    .headers()
                    .get(CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
                let raw = self
                    .read_counted(response, MAX_INDEX_BYTES, "index")
                    .await?;
                let body = match encoding.as_deref() {
                    None | Some("identity") => IndexBody::Plain(raw),
                    Some("gzip" | "x-gzip") => IndexBody::Gzip(raw),
                    Some(other) => {
                        return Err(Cause::InvalidIndex(format!(
                            "content-encoding {other:?} was not asked for"
                        )))
                    }
                };
                Ok(IndexFetch::Modified {
                    body,
                    validators: fresh_validators,
                })
            }
            StatusCode::NOT_MODIFIED => Ok(IndexFetch::NotModified {
                validators: fresh_validators,
            }),
            StatusCode::NOT_FOUND
            | StatusCode::GONE
            | StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => Ok(IndexFetch::Missing {
                status: status.as_u16(),
            }),
            other => Err(Cause::Status(other.as_u16())),
        }
    }

    /// Sends an idempotent GET built by `make`, within the upstream timeout
    /// (applied as `ask.limit` says): fails fast while the circuit is open
    /// (for `api` requests the web API's own circuit), waits
    /// for a permit of the concurrency bound, retries connection failures, 5xx
    /// and 429 with backoff and jitter (or the upstream's `Retry-After`) while
    /// time remains, and counts every exchange. The permit comes back with the
    /// response so that it is held until the body has been read. The cause of
    /// a failure is logged once per change (`Service::failed`). A probe's
    /// request is neither refused by an open circuit nor counted towards
    /// opening it; its success closes it like any other.
    async fn send_as(
        &self,
        ask: Ask<'_>,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, OwnedSemaphorePermit), Cause> {
        let Ask {
            kind,
            origin,
            limit,
            asker,
        } = ask;
        if self.offline {
            return Err(Cause::Offline);
        }
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        let (service, shown) = if kind == "api" {
            (&self.api, self.api_shown())
        } else {
            (&self.registry, self.shown.clone())
        };
        loop {
            if asker == Asker::Client && service.breaker.is_open() {
                self.metrics
                    .upstream_exchange(kind, origin, "circuit_open", 0.0, false);
                return Err(service.open());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let permit = tokio::time::timeout(remaining, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| Cause::Timeout)?
                .map_err(|_| Cause::Setup("client shut down".into()))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Cause::Timeout);
            }
            let started = Instant::now();
            let mut request = make();
            if limit == Limit::WholeRequest {
                // reqwest carries a request's timeout on into its body.
                request = request.timeout(remaining);
            }
            let result = match tokio::time::timeout(remaining, request.send()).await {
                Ok(sent) => sent.map_err(|err| Cause::of_reqwest(&err)),
                Err(_) => Err(Cause::Timeout),
            };
            let seconds = started.elapsed().as_secs_f64();
            let (failure, retry_after) = match &result {
                Ok(response) => {
                    let status = response.status();
                    let failed =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    self.metrics
                        .upstream_exchange(kind, origin, status.as_str(), seconds, !failed);
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    (failed.then(|| Cause::Status(status.as_u16())), retry_after)
                }
                Err(cause) => {
                    let label = match cause {
                        Cause::Timeout => "timeout",
                        Cause::RedirectRefused(_) => "redirect_refused",
                        _ => "error",
                    };
                    self.metrics
                        .upstream_exchange(kind, origin, label, seconds, false);
                    (Some(cause.clone()), None)
                }
            };
            if matches!(result, Err(Cause::RedirectRefused(_))) {
                // A policy decision, not an outage: asking again gets the same
                // redirect, and the circuit should not open over it.
                return result.map(|response| (response, permit));
            }
            let Some(failure) = failure else {
                service.breaker.record_success();
                // config.json's answer may still be no config.json: its
                // caller tells (`config_for`).
                if kind != "config" {
                    service.answered(&shown);
                }
                return result.map(|response| (response, permit));
            };
            service.failed(&failure, &shown);
            if asker == Asker::Client && service.breaker.record_failure() {
                tracing::warn!(kind, upstream = %shown, "upstream circuit opened after repeated failures");
            }
            attempt += 1;
            let delay = retry_after.unwrap_or_else(|| backoff_delay(attempt));
            let out_of_time = Instant::now() + delay >= deadline;
            // A timeout already used the whole budget.
            let timed_out = matches!(result, Err(Cause::Timeout));
            if attempt >= MAX_ATTEMPTS || out_of_time || timed_out {
                return result.map(|response| (response, permit));
            }
            drop(permit);
            self.metrics
                .upstream
                .retries
                .with_label_values(&[kind])
                .inc();
            tokio::time::sleep(delay).await;
        }
    }

    /// The web API's base as logs and clients are told it (the index's URL
    /// until config.json names one).
    fn api_shown(&self) -> Arc<str> {
        match self.known_config().and_then(|config| config.api.clone()) {
            Some(api) => crate::config::mask_userinfo(&api).into(),
            None => self.shown.clone(),
        }
    }

    /// GETs `path` (`/api/v1/...`, with its query, made by the caller from
    /// checked input) below the `api` base of the upstream's config.json: the
    /// host is always the upstream's own, never one a client named.
    pub async fn fetch_api(&self, path: &str) -> Result<ApiFetch, UpstreamError> {
        let config = self.config().await?;
        let Some(api) = &config.api else {
            return Ok(ApiFetch::NoApi);
        };
        let url = format!("{}{path}", api.trim_end_matches('/'));
        let fetched: Result<ApiFetch, Cause> = async {
            let (response, _permit) = self
                .send_as(Ask::client("api", Limit::WholeRequest), || {
                    self.http
                        .get(&url)
                        .header(reqwest::header::ACCEPT, "application/json")
                })
                .await?;
            match response.status() {
                StatusCode::OK => {
                    let body = self.read_counted(response, MAX_API_BYTES, "api").await?;
                    Ok(ApiFetch::Found(body))
                }
                StatusCode::NOT_FOUND => Ok(ApiFetch::Missing),
                other => Err(Cause::Status(other.as_u16())),
            }
        }
        .await;
        fetched.map_err(|cause| UpstreamError {
            cause,
            upstream: Some(crate::config::mask_userinfo(api).into()),
        })
    }

    /// `read_limited`, counting the bytes received as `kind`.
    async fn read_counted(
        &self,
        response: reqwest::Response,
        max: usize,
        kind: &str,
    ) -> Result<Bytes, Cause> {
        let body = read_limited(response, max).await?;
        self.metrics
            .upstream
            .fetched_bytes
            .with_label_values(&[kind])
            .inc_by(body.len() as u64);
        Ok(body)
    }

    /// Whether the circuit is open (the upstream is treated as down).
    pub fn circuit_open(&self) -> bool {
        self.registry.breaker.is_open()
    }

    /// Starts a download. The head must come within the timeout, and then the
    /// body streams with no deadline as a whole: it fails only when no bytes
    /// come for the timeout, so a large crate on a slow link gets through.
    pub async fn download(&self, url: &str) -> Result<DownloadStart, UpstreamError> {
        let (response, permit) = self
            .send_as(Ask::client("download", Limit::Head), || self.http.get(url))
            .await
            .map_err(|cause| self.error(cause))?;
        match response.status() {
            StatusCode::OK => Ok(DownloadStart::Found(DownloadStream {
                content_length: response.content_length(),
                body: idle_limited(response, permit, self.timeout, self.shown.clone()),
            })),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(DownloadStart::Missing),
            other => Err(self.error(Cause::Status(other.as_u16()))),
        }
    }
}

/// Who an upstream request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    /// A client's request (or work done for clients: prefetch, revalidation):
    /// its failures count towards opening the circuit.
    Client,
    /// The start-up fetch of config.json and `/ready`'s: an upstream down
    /// then is logged and reported, but opens no circuit before any client
    /// asked (the next client's request still goes to the upstream).
    Probe,
}

/// What `UpstreamClient::send_as` is asked to send, besides the request.
#[derive(Debug, Clone, Copy)]
struct Ask<'a> {
    /// The metrics' `kind` (`config`, `index`, `download`, `api`).
    kind: &'static str,
    /// The metrics' `origin` (see `UPSTREAM_ORIGINS`).
    origin: &'a str,
    limit: Limit,
    asker: Asker,
}

impl Ask<'static> {
    /// A client's own request of `kind`.
    fn client(kind: &'static str, limit: Limit) -> Self {
        Ask {
            kind,
            origin: "client",
            limit,
            asker: Asker::Client,
        }
    }
}

/// One service the client asks (the registry, or its web API): its circuit
/// breaker, and the failure being reported, so that its cause is logged once
/// when it begins or changes, not once per request or retry.
#[derive(Debug, Default)]
struct Service {
    breaker: CircuitBreaker,
    /// The cause of the failure under way; `None` while the service answers.
    failing: std::sync::Mutex<Option<Cause>>,
}

impl Service {
    /// Logs `cause` at ERROR unless a failure of its class is already reported.
    fn failed(&self, cause: &Cause, upstream: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing
            .as_ref()
            .is_some_and(|known| known.same_class(cause))
        {
            return;
        }
        tracing::error!(upstream, cause = %cause, "upstream failing");
        *failing = Some(cause.clone());
    }

    /// Ends the failure being reported, if any (so the next one is logged).
    fn answered(&self, upstream: &str) {
        let ended = self
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(cause) = ended {
            tracing::info!(upstream, was = %cause, "upstream answers again");
        }
    }

    /// The refusal of an open circuit, with the cause of the failures that opened it.
    fn open(&self) -> Cause {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        Cause::CircuitOpen(failing.clone().map(Box::new))
    }
}

/// How `UpstreamClient::send` applies the upstream timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// To the head and body together: small files, read at once.
    WholeRequest,
    /// To the head only; the caller bounds each read of the body
    /// (`idle_limited`), since a large body may take longer than the timeout.
    Head,
}

/// The body of `response` as a stream that fails with `Timeout` when no bytes
/// come for `idle`, and ends after its first error. It holds `permit` (a slot
/// of the concurrency bound) until then.
fn idle_limited(
    response: reqwest::Response,
    permit: OwnedSemaphorePermit,
    idle: Duration,
    upstream: Arc<str>,
) -> DownloadBody {
    let reading = Some((response.bytes_stream(), permit));
    Box::pin(futures_util::stream::unfold(reading, move |reading| {
        let upstream = upstream.clone();
        async move {
            let (mut body, permit) = reading?;
            let cause = match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => return Some((Ok(chunk), Some((body, permit)))),
                Ok(Some(Err(err))) => Cause::of_reqwest(&err),
                Ok(None) => return None,
                Err(_) => Cause::Timeout,
            };
            let upstream = Some(upstream);
            Some((Err(UpstreamError { cause, upstream }), None))
        }
    }))
}

/// Reads a whole (small) body, refusing anything larger than `max` bytes.
async fn read_limited(response: reqwest::Response, max: usize) -> Result<Bytes, Cause> {
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(Cause::TooLarge(max));
    }
    // Sized by the upstream's word, up to 1 MiB: a false length must not
    // make every fetch allocate `max` up front.
    let expected = response
        .content_length()
        .map_or(0, |len| len.min(PRESIZE_MAX) as usize);
    let mut body = BytesMut::with_capacity(expected);
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| Cause::of_reqwest(&err))?;
        if body.len() + chunk.len() > max {
            return Err(Cause::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(exact(body.into()))
}

/// The most `read_limited` allocates before the body arrives.
const PRESIZE_MAX: u64 = 1 << 20;

/// `body` in an allocation of its own length. A `Vec` grown by doubling (or
/// sized by a guess) can hold up to twice its length, and `Bytes::from` keeps
/// the whole allocation for as long as the bytes live: index bodies are kept
/// for hours, and their budget (`hot-cache-size`) counts lengths, so the
/// slack was memory nobody counted.
pub(crate) fn exact(body: Vec<u8>) -> Bytes {
    if body.capacity() == body.len() {
        Bytes::from(body)
    } else {
        Bytes::copy_from_slice(&body)
    }
}

/// Which forward proxy upstream traffic takes, for the start line: the
/// variables reqwest reads (`HTTPS_PROXY` or `HTTP_PROXY` by the upstream's
/// scheme, then `ALL_PROXY`; upper case first, as curl does), with any
/// password masked, and `NO_PROXY` as given. "none" when no proxy is set.
pub fn proxy_in_use(upstream: &str) -> String {
    let scheme_var = if upstream.starts_with("https:") {
        ["HTTPS_PROXY", "https_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy"]
    };
    let read = |names: &[&'static str]| {
        names.iter().find_map(|name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (*name, v))
        })
    };
    let Some((name, proxy)) = read(&scheme_var).or_else(|| read(&["ALL_PROXY", "all_proxy"]))
    else {
        return "none".into();
    };
    let mut described = format!("{} ({name})", mask_password(&proxy));
    if let Some((_, hosts)) = read(&["NO_PROXY", "no_proxy"]) {
        described.push_str(&format!(", except NO_PROXY={hosts}"));
    }
    described
}

/// A proxy URL with its password, if any, replaced by `***`; the user name,
/// host and port are kept (the unit test below shows both forms). The scheme
/// is optional: reqwest takes a bare `host:port` as HTTP.
fn mask_password(proxy: &str) -> String {
    let (scheme, rest) = match proxy.split_once("://") {
        Some((scheme, rest)) => (&proxy[..scheme.len() + 3], rest),
        None => ("", proxy),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}{user}:***@{host}")
        }
        None => proxy.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kept_bodies_hold_no_slack() {
        // As a body read by doubling, or decompressed into a guessed size.
        let mut grown = Vec::with_capacity(4096);
        grown.extend_from_slice(b"{\"name\":\"a\"}\n");
        let kept = super::exact(grown);
        assert_eq!(&kept[..], b"{\"name\":\"a\"}\n");
        let held = kept.try_into_mut().expect("the only handle");
        assert_eq!(
            held.capacity(),
            held.len(),
            "the allocation is the body's length"
        );
        // A body that fits its allocation is kept as it is.
        let fitted = b"abc".to_vec();
        let at = fitted.as_ptr();
        assert_eq!(super::exact(fitted).as_ptr(), at);
    }

    #[test]
    fn proxy_passwords_are_masked() {
        assert_eq!(
            super::mask_password("http://ops:s3cret@proxy.example.com:3128"),
            "http://ops:***@proxy.example.com:3128"
        );
        assert_eq!(
            super::mask_password("http://proxy.example.com:3128"),
            "http://proxy.example.com:3128"
        );
        assert_eq!(
            super::mask_password("ops:s3cret@proxy.example.com:3128"),
            "ops:***@proxy.example.com:3128"
        );
    }

    use super::*;

    fn config(dl: &str) -> UpstreamConfig {
        UpstreamConfig {
            dl: dl.to_string(),
            api: None,
        }
    }

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    /// A client on `base` keeping its config.json in `tree` (nothing is fetched).
    fn kept_in(tree: &sled::Tree, base: &str) -> UpstreamClient {
        let second = Duration::from_secs(1);
        UpstreamClient::new(
            base.into(),
            second,
            second,
            second,
            1,
            Arc::new(Metrics::new()),
        )
        .unwrap()
        .with_config_store(tree.clone())
    }

    /// The userinfo of the failing upstream's URL, and what it must show as.
    const CREDENTIALS: &str = "ops:s3cret";
    const MASKED: &str = "***";

    /// A loopback port nothing listens on (bound, then let go).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn probes_open_no_circuit_and_failures_name_the_upstream_and_cause() {
        let port = closed_port();
        let client = UpstreamClient::new(
            format!("http://{CREDENTIALS}@127.0.0.1:{port}/index/"),
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_secs(1),
            1,
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let shown = format!("upstream http://{MASKED}@127.0.0.1:{port}/index/ failed: ");

        // Probes (three tries each) never open the circuit...
        for _ in 0..3 {
            let err = client.probe_config().await.unwrap_err();
            assert!(matches!(err.cause(), Cause::ConnectionRefused), "{err:?}");
            assert_eq!(err.to_string(), format!("{shown}connection refused"));
            assert!(!client.circuit_open());
        }
        // ... so a client's request still goes to the upstream, and its
        // failures count: the second request's tries open the circuit.
        let validators = Validators::default();
        let err = client.fetch_index("3/a/abc", &validators, "client").await;
        assert!(matches!(err.unwrap_err().cause(), Cause::ConnectionRefused));
        assert!(!client.circuit_open());
        let err = client.fetch_index("3/a/abc", &validators, "client").await;
        let err = err.unwrap_err();
        assert!(client.circuit_open());
        // The refusal says why the circuit opened.
        assert!(
            matches!(err.cause(), Cause::CircuitOpen(Some(last)) if matches!(**last, Cause::ConnectionRefused)),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(&shown) && err.to_string().contains("(connection refused)"),
            "{err}"
        );
    }

    #[test]
    fn a_failure_class_is_its_kind_and_status() {
        assert!(Cause::Status(503).same_class(&Cause::Status(503)));
        assert!(!Cause::Status(503).same_class(&Cause::Status(404)));
        assert!(Cause::InvalidConfig("a".into()).same_class(&Cause::InvalidConfig("b".into())));
        assert!(!Cause::Tls.same_class(&Cause::ConnectionRefused));
    }

    #[tokio::test]
    async fn a_kept_config_json_is_restored_for_its_own_upstream_only() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("upstream").unwrap();
        let base = "http://127.0.0.1:9/index/";
        let client = kept_in(&tree, base);
        client.restore_config().await;
        assert!(!client.config_known(), "nothing kept yet");

        let kept = serde_json::to_vec(&config("http://files.example.com/dl")).unwrap();
        tree.insert(client.config_key(), kept).unwrap();
        let client = kept_in(&tree, base);
        client.restore_config().await;
        assert!(client.config_known());
        assert_eq!(client.config_fetch_ok(), None, "restored, not fetched");
        // Redirects may reach the kept `dl` host, as after a fetch.
        assert!(client.redirects.admits(&url("http://files.example.com/x")));

        // Another upstream on the same data dir does not take it.
        let other = kept_in(&tree, "http://127.0.0.1:10/index/");
        other.restore_config().await;
        assert!(!other.config_known());

        // A kept `dl` that would not be accepted from the upstream is ignored.
        let bad = serde_json::to_vec(&config("ftp://files.example.com/dl")).unwrap();
        tree.insert(client.config_key(), bad).unwrap();
        let client = kept_in(&tree, base);
        client.restore_config().await;
        assert!(!client.config_known());
    }

    #[tokio::test]
    async fn the_api_base_is_kept_and_checked_like_dl() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("upstream").unwrap();
        let base = "http://127.0.0.1:9/index/";
        let kept = |api: Option<&str>| {
            let mut config = config("http://files.example.com/dl");
            config.api = api.map(str::to_string);
            serde_json::to_vec(&config).unwrap()
        };
        let client = kept_in(&tree, base);
        tree.insert(
            client.config_key(),
            kept(Some("http://api.example.com:8080")),
        )
        .unwrap();
        client.restore_config().await;
        let known = client.known_config().unwrap();
        assert_eq!(known.api.as_deref(), Some("http://api.example.com:8080"));
        // Redirects may reach the API's host (and port) as they may `dl`'s.
        assert!(client
            .redirects
            .admits(&url("http://api.example.com:8080/x")));
        assert!(!client
            .redirects
            .admits(&url("http://api.example.com:8081/x")));
        assert!(client.redirects.admits(&url("http://files.example.com/x")));

        // An `api` that is not http(s) is dropped; the config (and `dl`) stays.
        let client = kept_in(&tree, base);
        tree.insert(client.config_key(), kept(Some("file:///etc/passwd")))
            .unwrap();
        client.restore_config().await;
        let known = client.known_config().unwrap();
        assert_eq!(known.api, None);
        assert_eq!(known.dl, "http://files.example.com/dl");

        // A copy kept by a version that knew no `api` reads as none.
        tree.insert(
            client.config_key(),
            &br#"{"dl":"http://files.example.com/dl"}"#[..],
        )
        .unwrap();
        let client = kept_in(&tree, base);
        client.restore_config().await;
        assert_eq!(client.known_config().unwrap().api, None);
    }

    #[test]
    fn redirect_hosts_match_host_and_port() {
        let any_port = AllowedHost::from_setting("files.example.com").unwrap();
        assert!(any_port.admits(&url("https://files.example.com/a")));
        // Host names compare without case.
        let shouting = format!("http://{}:8080/a", "FILES.example.com");
        assert!(any_port.admits(&url(&shouting)));
        assert!(!any_port.admits(&url("https://example.com/a")));
        assert!(!any_port.admits(&url("https://files.example.com.evil.example/a")));

        let one_port = AllowedHost::from_setting("127.0.0.1:8443").unwrap();
        assert!(one_port.admits(&url("http://127.0.0.1:8443/x")));
        assert!(!one_port.admits(&url("http://127.0.0.1:8444/x")));
        assert!(!one_port.admits(&url("http://127.0.0.1/x")));

        let ipv6 = AllowedHost::from_setting("[::1]:9000").unwrap();
        assert!(ipv6.admits(&url("http://[::1]:9000/x")));
        assert!(!ipv6.admits(&url("http://[::1]:9001/x")));
        assert_eq!(AllowedHost::from_setting("[::1]").unwrap().port, None);

        // The upstream's own hosts carry their port, explicit or the scheme's.
        let own = AllowedHost::of_url(&url("https://index.example.com/")).unwrap();
        assert!(own.admits(&url("https://index.example.com/dl")));
        assert!(!own.admits(&url("http://index.example.com:8080/dl")));
    }

    #[test]
    fn dl_without_markers_appends_the_default_path() {
        assert_eq!(
            config("http://dl.example.com/api/v1/crates").download_url("Foo", "1.0.0+b", "ab"),
            "http://dl.example.com/api/v1/crates/Foo/1.0.0+b/download"
        );
    }

    #[test]
    fn dl_markers_are_substituted() {
        let dl = config("http://dl.example.com/{prefix}/{lowerprefix}/{crate}/{crate}-{version}.crate?sum={sha256-checksum}");
        assert_eq!(
            dl.download_url("FooBar", "0.1.0", "ab12"),
            "http://dl.example.com/Fo/oB/fo/ob/FooBar/FooBar-0.1.0.crate?sum=ab12"
        );
        assert_eq!(
            config("http://dl.example.com/{crate}/{version}").download_url("abc", "1.0.0", "x"),
            "http://dl.example.com/abc/1.0.0"
        );
        assert_eq!(
            config("http://dl.example.com/{prefix}/{crate}").download_url("Abc", "1.0.0", "x"),
            "http://dl.example.com/3/A/Abc"
        );
    }
}
