//! crate-mirror: a caching mirror for Rust's package registry.
//!
//! The crate is a library (the domain services and the HTTP surface) with a thin
//! binary in `main.rs`. `AppState` wires the services together for one data dir.

pub mod access_log;
pub mod auth;
pub mod background;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crates;
pub mod git;
pub mod http;
pub mod index;
pub mod metrics;
pub mod names;
pub mod prefetch;
pub mod proxies;
pub mod resilience;
pub mod single_flight;
pub mod storage;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

use config::{Config, StorageConfig};
use crates::CrateService;
use index::cache::{IndexCache, IndexPolicy};
use index::store::IndexStore;
use metrics::Metrics;
use storage::local::LocalStore;
use storage::memory::MemoryCachedStore;
use storage::s3::S3Store;
use storage::CrateStore;
use upstream::UpstreamClient;

/// Why the mirror could not start. Messages name what failed; the cause is
/// the error's source (printed after it by `main`), never repeated in the text.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database in {path} (is a mirror already running on this data dir?)")]
    Database { path: PathBuf, source: sled::Error },
    #[error("cannot open the index store in {path}")]
    IndexStore {
        path: PathBuf,
        source: index::store::StoreError,
    },
    #[error("upstream client")]
    Upstream(#[from] upstream::UpstreamError),
    #[error("crate storage")]
    Storage(#[from] storage::StorageError),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A client must send its request head within this; slow-loris guard.
const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Idle time after which a kept-alive connection is closed (actix's default).
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 32 << 20;

/// How long `/ready` waits for the upstream's config.json when it is not known yet.
const READY_UPSTREAM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The services behind the HTTP surface, shared by every worker.
pub struct AppState {
    pub index: IndexCache,
    pub crates: CrateService,
    pub upstream: Arc<UpstreamClient>,
    pub public_url: Option<String>,
    data_dir: PathBuf,
    db: sled::Db,
    index_store: IndexStore,
    /// The local backend, when in use: it runs the quota's eviction task.
    local_store: Option<Arc<LocalStore>>,
    /// The memory in front of the store, when `crate-cache-size` is not 0.
    crate_memory: Option<Arc<MemoryCachedStore>>,
    /// The S3 backend, when in use: readiness checks that its bucket answers.
    s3_store: Option<Arc<S3Store>>,
    /// The git index, when enabled.
    pub git: Option<Arc<git::GitIndex>>,
    git_rebuild_delay: std::time::Duration,
    pub metrics: Arc<Metrics>,
    storage_backend: &'static str,
    /// Which tokens open which routes.
    pub access: auth::AccessPolicy,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: proxies::TrustedProxies,
}

/// The answer of `/ready`.
#[derive(Debug, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub data_dir_writable: bool,
    pub database_open: bool,
    pub upstream_config_known: bool,
    /// The crate store answers (always true for local storage, whose data dir
    /// is checked above; for S3, a bounded list request on the bucket).
    pub storage_ok: bool,
    /// Why the store does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

impl AppState {
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let data_dir = config.data_dir.clone();
        let tmp_dir = data_dir.join("tmp");
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::DataDir { path, source }
        };
        let removed = {
            let tmp_dir = tmp_dir.clone();
            off_async(move || {
                std::fs::create_dir_all(&tmp_dir).map_err(dir_err(&tmp_dir))?;
                crates::clean_temp_dir(&tmp_dir).map_err(dir_err(&tmp_dir))
            })
            .await?
        };
        if removed > 0 {
            tracing::info!(removed, "removed unfinished downloads of a previous run");
        }
        let db_path = data_dir.join("sled");
        // sled keeps a page cache of 1 GiB by default; bound it, since the hot
        // index files are in the (separately bounded) moka cache anyway.
        let db = {
            let flush_every = u64::try_from(config.db_flush_interval.as_millis())
                .ok()
                .filter(|ms| *ms > 0);
            let config = sled::Config::new()
                .path(&db_path)
                .cache_capacity(SLED_CACHE_BYTES)
                .flush_every_ms(flush_every);
            off_async(move || config.open()).await
        }
        .map_err(|source| StartError::Database {
            path: db_path.clone(),
            source,
        })?;
        // Counts the stored index files: a one-time walk of the tree.
        let index_db = db.clone();
        let index_store = off_async(move || IndexStore::open(&index_db))
            .await
            .map_err(|source| StartError::IndexStore {
                path: db_path,
                source,
            })?;
        let metrics = Arc::new(Metrics::new());
        let upstream = Arc::new(
            UpstreamClient::new(
                config.upstream.clone(),
                config.connect_timeout,
                config.upstream_timeout,
                config.index_ttl.max(std::time::Duration::from_secs(1)),
                config.upstream_concurrency,
                metrics.clone(),
            )?
            .with_redirect_hosts(&config.upstream_redirect_hosts),
        );
        let policy = IndexPolicy {
            ttl: config.index_ttl,
            max_stale: config.index_max_stale,
            negative_ttl: config.negative_ttl,
            hot_cache_bytes: config.hot_cache_bytes,
        };
        let index = IndexCache::builder(
            index_store.clone(),
            upstream.clone(),
            policy,
            metrics.clone(),
        )
        .revalidate_interval(config.revalidate_interval)
        .build();
        let mut s3_store = None;
        let (store, local_store): (Arc<dyn CrateStore>, _) = match &config.storage {
            StorageConfig::Local { max_bytes } => {
                let tree = db
                    .open_tree("crate_access")
                    .map_err(|source| StartError::Database {
                        path: data_dir.join("sled"),
                        source,
                    })?;
                // Counts the stored crates: a one-time walk of the tree.
                let (root, max_bytes) = (data_dir.clone(), *max_bytes);
                let local =
                    off_async(move || LocalStore::with_accounting(root, tree, max_bytes)).await?;
                let local = Arc::new(local);
                (local.clone(), Some(local))
            }
            StorageConfig::S3(s3) => {
                let s3 = Arc::new(S3Store::new(s3)?);
                // Wrong keys or an unreachable bucket do not stop the start (the
                // bucket may come back); /ready reports it until then.
                if let Err(reason) = s3.check().await {
                    tracing::warn!(%reason, "the S3 bucket does not answer; not ready until it does");
                }
                s3_store = Some(s3.clone());
                (s3, None)
            }
        };
        let crate_memory = (config.crate_cache_bytes > 0).then(|| {
            Arc::new(MemoryCachedStore::new(
                store.clone(),
                config.crate_cache_bytes,
            ))
        });
        let store: Arc<dyn CrateStore> = match &crate_memory {
            Some(memory) => memory.clone(),
            None => store,
        };
        let crates = CrateService::new(
            index.clone(),
            upstream.clone(),
            store,
            tmp_dir,
            metrics.clone(),
        );
        let git = match (&config.git_index, &config.public_url) {
            (true, Some(public_url)) => {
                let committed =
                    db.open_tree("git_committed")
                        .map_err(|source| StartError::Database {
                            path: data_dir.join("sled"),
                            source,
                        })?;
                let git = git::GitIndex::open(
                    &data_dir,
                    public_url.clone(),
                    !config.auth_tokens.is_empty(),
                    index_store.clone(),
                    committed,
                )
                .await?;
                Some(Arc::new(git))
            }
            _ => None,
        };
        Ok(Self {
            index,
            crates,
            upstream,
            public_url: config.public_url.clone(),
            data_dir,
            db,
            index_store,
            local_store,
            crate_memory,
            s3_store,
            git,
            git_rebuild_delay: config.git_rebuild_delay,
            metrics,
            access: auth::AccessPolicy {
                clients: config.auth_tokens.clone(),
                metrics: config.metrics_tokens.clone(),
            },
            trusted_proxies: config.trusted_proxies.clone(),
            storage_backend: match config.storage {
                StorageConfig::Local { .. } => "local",
                StorageConfig::S3(_) => "s3",
            },
        })
    }

    pub async fn readiness(&self) -> Readiness {
        let probe = self.data_dir.join("tmp").join(".ready-probe");
        let data_dir_writable = tokio::fs::write(&probe, b"ok").await.is_ok()
            && tokio::fs::remove_file(&probe).await.is_ok();
        let db = self.db.clone();
        let database_open = tokio::task::spawn_blocking(move || db.get(b"ready-probe").is_ok())
            .await
            .unwrap_or(false);
        // Bounded, so a probe never hangs on a stalled upstream.
        let upstream_config_known = self.upstream.config_known()
            || tokio::time::timeout(READY_UPSTREAM_WAIT, self.upstream.config())
                .await
                .is_ok_and(|config| config.is_ok());
        let storage = match &self.s3_store {
            Some(s3) => s3.check().await,
            None => Ok(()),
        };
        Readiness {
            ready: data_dir_writable && database_open && upstream_config_known && storage.is_ok(),
            data_dir_writable,
            database_open,
            upstream_config_known,
            storage_ok: storage.is_ok(),
            storage_error: storage.err(),
        }
    }

    /// Sets the gauges that are read from the stores' counters (kept by the
    /// stores as they write; nothing here walks sled).
    pub fn refresh_gauges(&self) {
        let metrics = &self.metrics;
        metrics.index_files.set(self.index_store.len() as i64);
        metrics
            .upstream_circuit_open
            .set(i64::from(self.upstream.circuit_open()));
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(memory) = &self.crate_memory {
            metrics.crate_memory_bytes.set(to_i64(memory.usage().1));
        }
        if let Some(local) = &self.local_store {
            metrics
                .storage_bytes
                .set(to_i64(local.total_bytes().unwrap_or(0)));
            metrics
                .storage_objects
                .set(to_i64(local.objects().unwrap_or(0)));
            metrics
                .storage_quota_bytes
                .set(to_i64(local.max_bytes().unwrap_or(0)));
        }
    }

    /// The dashboard's feed: the metrics' figures plus storage and git state.
    /// Counters only, so it is cheap however much is stored.
    pub fn stats(&self) -> serde_json::Value {
        self.refresh_gauges();
        let mut stats = self.metrics.snapshot();
        let local = self.local_store.as_ref();
        let bytes = local.and_then(|s| s.total_bytes());
        let quota = local.and_then(|s| s.max_bytes());
        stats["index_files_stored"] = self.index_store.len().into();
        stats["storage_bytes"] = bytes.into();
        stats["storage_quota_bytes"] = quota.into();
        stats["storage"] = serde_json::json!({
            "backend": self.storage_backend,
            "bytes": bytes,
            "objects": local.and_then(|s| s.objects()),
            "quota_bytes": quota,
            "memory_files": self.crate_memory.as_ref().map(|m| m.usage().0),
            "memory_bytes": self.crate_memory.as_ref().map(|m| m.usage().1),
        });
        stats["git"] = self.git.as_ref().map(|g| g.stats()).into();
        stats
    }

    /// Writes what sled holds in memory to disk.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.db.flush().map(|_| ())
    }
}

/// Runs blocking start and stop work (the data dir, opening sled and
/// counting its trees, flushing it) on tokio's blocking pool, never on the
/// async thread; a panic there is passed on as it would be inline.
async fn off_async<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("blocking work was cancelled: {err}"),
        },
    }
}

/// The listening socket, with TCP_NODELAY (which Linux passes on to accepted
/// connections): a streamed download writes its head and then its body, and
/// with Nagle's algorithm the body would wait for the client's delayed ACK.
fn listener(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(2048)?.into_std()?;
    // actix registers the socket with its own runtime.
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The TLS settings: the certificate chain and key from PEM files, and ALPN
/// offering HTTP/2 first so that cargo multiplexes its many index requests over
/// one connection.
fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: &Path, e: &dyn std::fmt::Display| {
        StartError::Tls(format!("{}: {e}", what.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert, &e))?;
    if chain.is_empty() {
        return Err(tls_err(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, &e))?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| tls_err(cert, &e))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// Runs the mirror until it is stopped (SIGINT/SIGTERM). `on_listening` is told
/// the bound address before the first request is accepted.
///
/// The background tasks belong to this function: on the stop signal they are
/// cancelled while the HTTP server drains, and waited for (within the
/// shutdown timeout, counted from the signal) before the database is flushed
/// and this returns.
pub async fn serve(
    config: Config,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), StartError> {
    let state = web::Data::new(AppState::open(&config).await?);
    let mut background = background::Background::new();
    {
        // Learn the upstream's `dl` early; /ready reports it.
        let state = state.clone();
        let stop = background.token();
        background.spawn("upstream config", async move {
            tokio::select! {
                () = stop.cancelled() => {}
                learned = state.upstream.config() => if let Err(err) = learned {
                    tracing::warn!(error = %err, "upstream config.json not available yet");
                },
            }
        });
    }
    if let Some(local) = state.local_store.clone() {
        background.spawn("storage eviction", local.run_eviction(background.token()));
    }
    if let Some(policy) = config.prefetch {
        if let Some(fetched) = state.index.subscribe_fetches() {
            let prefetcher =
                prefetch::Prefetcher::new(state.index.clone(), policy, state.metrics.clone());
            background.spawn("prefetch", prefetcher.run(fetched, background.token()));
        }
    }
    if let Some(git) = state.git.clone() {
        let rebuilds = git.run(
            state.index.changes(),
            state.git_rebuild_delay,
            background.token(),
        );
        background.spawn("git index", rebuilds);
    }
    let app_state = state.clone();
    let make_app = move || {
        App::new()
            .app_data(app_state.clone())
            .wrap(actix_web::middleware::from_fn(http::limit_request_size))
            .wrap(actix_web::middleware::from_fn(http::record_request))
            .configure(http::routes)
    };
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let listen_err = |source| StartError::Listen {
        addr: config.listen,
        source,
    };
    let listener = listener(config.listen).map_err(listen_err)?;
    let local_addr = listener.local_addr().map_err(listen_err)?;
    let server = match &config.tls {
        // TLS: actix's own server, HTTP/2 by ALPN.
        Some((cert, key)) => HttpServer::new(make_app)
            .workers(workers)
            .max_connections(config.max_connections)
            .h1_write_buffer_size(http::WRITE_BUFFER)
            .shutdown_timeout(config.shutdown_timeout.as_secs())
            // A client must send its request head within this; slow-loris guard.
            .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
            .listen_rustls_0_23(listener, tls_config(cert, key)?)
            .map_err(listen_err)?
            .run(),
        // Plain: the same app behind our h2c negotiation (see `http::h2c`).
        None => {
            let metrics = state.metrics.clone();
            actix_server::Server::build()
                .workers(workers)
                .max_concurrent_connections(config.max_connections)
                .shutdown_timeout(config.shutdown_timeout.as_secs())
                .listen("crate-mirror", listener, move || {
                    let http = actix_http::HttpService::build()
                        .keep_alive(actix_http::KeepAlive::Timeout(KEEP_ALIVE))
                        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                        .h1_write_buffer_size(http::WRITE_BUFFER)
                        .local_addr(local_addr)
                        .finish(actix_service::map_config(
                            actix_service::IntoServiceFactory::into_factory(make_app()),
                            // Host and scheme come from each request (`http::origin`).
                            |_| actix_web::dev::AppConfig::default(),
                        ));
                    let metrics = metrics.clone();
                    http::h2c::plain_connections(http, move |how| {
                        metrics
                            .http_connections
                            .with_label_values(&[how.as_str()])
                            .inc();
                    })
                })
                .map_err(listen_err)?
                .run()
        }
    };
    on_listening(local_addr);
    let result = {
        let mut server = std::pin::pin!(server);
        tokio::select! {
            result = &mut server => result,
            // The server stops on the same signal; the background tasks need
            // not wait for its in-flight requests to drain.
            () = background::stop_signal() => {
                background.cancel();
                server.await
            }
        }
    };
    background.stop(config.shutdown_timeout).await;
    let flushed = {
        let state = state.clone();
        off_async(move || state.flush()).await
    };
    if let Err(err) = flushed {
        tracing::error!(error = %err, "flushing the database failed");
    }
    result.map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })
}
