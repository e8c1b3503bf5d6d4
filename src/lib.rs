//! crate-mirror: a caching mirror for Rust's package registry.
//!
//! The crate is a library (the domain services and the HTTP surface) with a thin
//! binary in `main.rs`. `AppState` wires the parts together for one data dir:
//! the data dir itself (`data_dir`), the crate stores (`storage::stores`),
//! the services, readiness (`readiness`), the figures read from outside the
//! metrics (`stats`) and the request-facing settings (`http::ClientFacing`).

pub mod access_log;
pub mod auth;
pub mod background;
mod blocking;
pub mod bundle;
pub mod client_config;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crates;
pub mod data_dir;
pub mod git;
pub mod http;
pub mod index;
mod listen;
pub mod metrics;
pub mod names;
pub mod operator;
pub mod policy;
pub mod prefetch;
pub mod proxies;
pub mod readiness;
pub mod registry_api;
pub mod resilience;
pub mod single_flight;
pub mod stats;
pub mod storage;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{web, App};

use blocking::off_async;
use config::Config;
use crates::CrateService;
use data_dir::DataDir;
use index::cache::{IndexCache, IndexPolicy};
use metrics::Metrics;
use readiness::ReadinessProbe;
use registry_api::RegistryApi;
use storage::stores::Stores;
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
    #[error("cannot open the database in {path}")]
    Database { path: PathBuf, source: sled::Error },
    #[error(
        "the database in {path} is in use by another process: a mirror is already running on \
         this data dir (stop it first, or give another --data-dir)"
    )]
    DatabaseInUse { path: PathBuf },
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

impl StartError {
    /// A failure to open the database at `path`. sled reports a lock held by
    /// another process as a plain I/O error whose text carries Rust debug
    /// output (`Os { code: 11, .. }`), so that case is told apart here and
    /// said in words.
    pub fn database(path: PathBuf, source: sled::Error) -> Self {
        match &source {
            sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock") => {
                StartError::DatabaseInUse { path }
            }
            _ => StartError::Database { path, source },
        }
    }
}

/// Threads each HTTP worker's blocking pool may grow to (the file writes and
/// fsyncs of downloads, sled, index jobs). actix's default shares 512 out
/// over the workers: by hand, a cold `cargo fetch` of 307 crates from the
/// real upstream grew it to 150–200 threads, each with its own allocator
/// heap, and left 125 MB resident a second later; with 16 per worker, 89–96
/// MB. `benches/real_world.rs` (web, fetch, three runs each, back to back)
/// showed no cost: cold fetches 3.75–4.93 s capped, 4.27–5.28 s not.
const WORKER_BLOCKING_THREADS: usize = 16;

/// A client must send its request head within this; slow-loris guard.
const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The parts behind the HTTP surface, shared by every worker: only wiring;
/// each part is built next to its type.
pub struct AppState {
    pub index: IndexCache,
    pub crates: CrateService,
    /// Search and crate metadata, passed through to the upstream's web API.
    pub registry_api: RegistryApi,
    pub upstream: Arc<UpstreamClient>,
    /// The git index, when enabled.
    pub git: Option<Arc<git::GitIndex>>,
    pub metrics: Arc<Metrics>,
    /// The public URL, the access policy and the trusted proxies.
    pub facing: http::ClientFacing,
    pub stores: Stores,
    pub readiness: ReadinessProbe,
    /// The upstream, mode and settings the dashboard shows.
    pub operator: operator::OperatorInfo,
    data: DataDir,
}

impl AppState {
    pub async fn open(config: &Config) -> Result<Self, StartError> {
        let data = DataDir::open(&config.data_dir, config.db_flush_interval).await?;
        let metrics = Arc::new(Metrics::new());
        metrics
            .index
            .records_lost
            .with_label_values(&["missing"])
            .inc_by(data.start().index_files_lost_at_start);
        let upstream = Arc::new(
            UpstreamClient::from_config(config, metrics.clone())?
                .with_config_store(data.tree("upstream")?),
        );
        // The last config.json a previous run fetched: downloads know the `dl`
        // template even when the upstream is down at start.
        upstream.restore_config().await;
        let index = IndexCache::builder(
            data.index_store().clone(),
            upstream.clone(),
            IndexPolicy::from_config(config),
            metrics.clone(),
        )
        .revalidate_interval(config.revalidate_interval)
        .supply_chain(config.policy.clone())
        .build();
        let stores = Stores::open(&config.storage, config.crate_cache_bytes, &data).await?;
        let crates = CrateService::new(
            index.clone(),
            upstream.clone(),
            stores.front(),
            data.tmp_dir(),
            metrics.clone(),
        );
        let git = match (&config.git_index, &config.public_url) {
            (true, Some(public_url)) => {
                let git = git::GitIndex::open(
                    data.root(),
                    public_url.clone(),
                    !config.auth_tokens.is_empty(),
                    data.index_store().clone(),
                    data.tree("git_committed")?,
                )
                .await?;
                Some(Arc::new(git))
            }
            _ => None,
        };
        let readiness = ReadinessProbe::new(
            data.tmp_dir(),
            data.db().clone(),
            upstream.clone(),
            stores.s3().cloned(),
            data.start().clone(),
        );
        Ok(Self {
            index,
            crates,
            registry_api: RegistryApi::new(upstream.clone(), metrics.clone()),
            upstream,
            git,
            metrics,
            facing: http::ClientFacing::from_config(config),
            stores,
            readiness,
            operator: operator::OperatorInfo::from_config(config),
            data,
        })
    }

    /// What the gauges and the dashboard read from the parts, now.
    fn sources(&self) -> stats::Sources {
        stats::Sources {
            index_files: self.data.index_store().len(),
            circuit_open: self.upstream.circuit_open(),
            offline: self.upstream.is_offline(),
            index_memory: self.index.memory(),
            storage: self.stores.figures(),
            git: self.git.as_ref().map(|g| g.stats()),
        }
    }

    /// Sets the gauges read from the other parts' counters (before `/metrics`).
    pub fn refresh_gauges(&self) {
        stats::refresh_gauges(&self.metrics, &self.sources());
    }

    /// The dashboard's feed (`/api/stats`).
    pub fn stats(&self) -> serde_json::Value {
        stats::stats(&self.metrics, &self.sources())
    }

    /// Writes what sled holds in memory to disk.
    pub fn flush(&self) -> Result<(), sled::Error> {
        self.data.flush()
    }

    /// The stored index files (for `export` and `import`, which work on a
    /// data dir no mirror is serving).
    pub fn index_store(&self) -> &index::store::IndexStore {
        self.data.index_store()
    }

    /// The data dir's temp dir, on the same filesystem as local storage.
    pub fn tmp_dir(&self) -> std::path::PathBuf {
        self.data.tmp_dir()
    }
}

/// Runs the mirror until it is stopped (SIGINT/SIGTERM). `on_listening` is told
/// the bound address before the first request is accepted, and before the
/// HTTP server writes any log line (its start line is the log's first).
///
/// The background tasks belong to this function: on the stop signal they are
/// cancelled while the HTTP server drains, and waited for (within the
/// shutdown timeout, counted from the signal) before the database is flushed
/// and this returns. Connections still open when the timeout runs out are
/// dropped (`drain`); the last log line, `crate-mirror stopped`, comes after
/// their access lines and the flush.
pub async fn serve(
    config: Config,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), StartError> {
    let state = web::Data::new(AppState::open(&config).await?);
    let mut background = background::Background::new();
    {
        // Learn (or refresh the restored) upstream `dl` early; /ready reports
        // it. A failure is logged (at ERROR, with its cause) by the client,
        // and, as a probe's, opens no circuit before any client asked.
        let state = state.clone();
        let stop = background.token();
        background.spawn("upstream config", async move {
            tokio::select! {
                () = stop.cancelled() => {}
                _ = state.upstream.probe_config() => {}
            }
        });
    }
    if let Some(local) = state.stores.local().cloned() {
        background.spawn(
            "storage eviction",
            local.run_eviction(background.token(), state.metrics.clone()),
        );
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
            config.git_rebuild_delay,
            background.token(),
        );
        background.spawn("git index", rebuilds);
    }
    let app_state = state.clone();
    let make_app = move || {
        App::new()
            .app_data(app_state.clone())
            // Innermost: a request refused for its connection's streams is
            // still counted and logged, and reaches no handler.
            .wrap(actix_web::middleware::from_fn(
                http::connection::bound_streams,
            ))
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
    let listener = listen::listener(config.listen).map_err(listen_err)?;
    let local_addr = listener.local_addr().map_err(listen_err)?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(Arc::new(listen::tls_config(cert, key)?)),
        None => None,
    };
    let server = actix_server::Server::build()
        .workers(workers)
        .worker_max_blocking_threads(WORKER_BLOCKING_THREADS)
        .max_concurrent_connections(config.max_connections)
        // A second past ours: the stop's cut is `drain`'s, which counts and
        // logs what it drops; actix's own would come unannounced.
        .shutdown_timeout(config.shutdown_timeout.as_secs() + 1);
    // Told to every connection when the stop begins: an idle HTTP/1.1
    // keep-alive connection then closes at once instead of holding the
    // stop for up to `keep-alive` (capped by `shutdown-timeout`).
    let shutdown = server.graceful_shutdown_signal();
    let keep_alive = config.keep_alive;
    // Both listeners: actix's HTTP/1 and HTTP/2 dispatchers behind our own
    // accept (the h2c negotiation, or the TLS handshake with ALPN), each
    // connection a `http::connection::Conn`.
    // A macro, not a closure: each listener's connections are of their own type.
    macro_rules! http_service {
        ($tls:expr) => {{
            let builder = actix_http::HttpService::build()
                // Also the HTTP/2 PING deadline: a client frozen for less
                // than this keeps its connection.
                .keep_alive(actix_http::KeepAlive::Timeout(keep_alive))
                .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
                .h1_write_buffer_size(http::WRITE_BUFFER)
                .local_addr(local_addr)
                .graceful_shutdown_signal({
                    let shutdown = shutdown.clone();
                    move || {
                        let shutdown = shutdown.clone();
                        async move { shutdown.notified().await }
                    }
                })
                .on_connect_ext(http::connection::on_connect($tls));
            let builder = if $tls { builder.secure() } else { builder };
            http::connection::connections(builder.finish(actix_service::map_config(
                actix_service::IntoServiceFactory::into_factory(make_app()),
                // Host and scheme come from each request (`http::origin`).
                |_| actix_web::dev::AppConfig::default(),
            )))
        }};
    }
    let server = match tls {
        // TLS: HTTP/2 by ALPN.
        Some(tls) => server.listen("crate-mirror", listener, move || {
            http::connection::tls_connections(http_service!(true), tls.clone())
        }),
        // Plain: HTTP/2 by our h2c negotiation (see `http::h2c`).
        None => {
            let metrics = state.metrics.clone();
            let h2c_policy = http::h2c::UpgradePolicy {
                enabled: config.h2c_upgrade,
                trusted_proxies: config.trusted_proxies.clone(),
            };
            server.listen("crate-mirror", listener, move || {
                let metrics = metrics.clone();
                http::h2c::plain_connections(http_service!(false), h2c_policy.clone(), move |how| {
                    metrics
                        .http
                        .connections
                        .with_label_values(&[how.as_str()])
                        .inc();
                })
            })
        }
    }
    .map_err(listen_err)?;
    // Before `run`, which writes actix's own lines: the start line that
    // `on_listening` writes is the log's first. The socket listens already.
    on_listening(local_addr);
    let server = server.run();
    let mut server = server;
    let result = tokio::select! {
        result = &mut server => result,
        // The server stops on the same signal; the background tasks need
        // not wait for its in-flight requests to drain.
        () = background::stop_signal() => {
            background.cancel();
            drain(server, config.shutdown_timeout).await
        }
    };
    cut_lines_written().await;
    background.stop(config.shutdown_timeout).await;
    let flushed = {
        let state = state.clone();
        off_async(move || state.flush()).await
    };
    if let Err(err) = flushed {
        tracing::error!(error = %err, "flushing the database failed");
    }
    tracing::info!("crate-mirror stopped");
    result.map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })
}

/// Waits for the server's graceful stop to end, at most `shutdown_timeout`;
/// then drops the server, which closes the connections still open at once.
/// Either way (a forced stop, SIGINT, ends them too) says how many
/// connections are dropped, and has their responses logged as cut by the
/// stop rather than by their clients.
async fn drain(
    mut server: actix_server::Server,
    shutdown_timeout: std::time::Duration,
) -> std::io::Result<()> {
    let dropping = || {
        let open = http::connection::open_connections();
        if open > 0 {
            access_log::stop_cuts_from_now();
            tracing::warn!(
                connections = open,
                "shutdown-timeout passed: dropping the connections still open"
            );
        }
    };
    tokio::select! {
        result = &mut server => {
            dropping();
            result
        }
        () = tokio::time::sleep(shutdown_timeout) => {
            dropping();
            // Dropping a running server stops its workers at once; it joins
            // its (already stopping) accept thread, so off the async thread.
            off_async(move || drop(server)).await;
            Ok(())
        }
    }
}

/// How long the stop waits for the connections it dropped to be gone and
/// their access lines written (the workers' threads end them once the
/// server has stopped), so that `crate-mirror stopped` is the last line.
const CUT_LINES_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn cut_lines_written() {
    let deadline = tokio::time::Instant::now() + CUT_LINES_WAIT;
    while (access_log::lines_owed() > 0 || http::connection::open_connections() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
