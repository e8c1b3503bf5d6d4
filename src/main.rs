//! The `crate-mirror` command: parses the command line, sets up logging and runs
//! the chosen subcommand.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use crate_mirror::config::{env_var_name, Config, ConfigError, LogFormat, RawSettings};

#[derive(Parser)]
#[command(
    name = "crate-mirror",
    version,
    about = "A caching mirror for Rust's package registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sparse index and crate downloads.
    Serve(SettingsArgs),
    /// Re-hash every stored crate against its index cksum; remove bad ones.
    /// Exits with 1 when it found any. Safe beside a running mirror.
    Verify(SettingsArgs),
    /// Evict least recently used crates until local storage is under
    /// --max-storage. Needs the data dir to itself (a running mirror evicts
    /// in the background on its own).
    Gc(SettingsArgs),
    /// Make a new client token: prints the token (give it to users) and its
    /// hash (put it in `auth-tokens`).
    Token,
    /// Fill a running mirror's cache: the index file of every package named
    /// and the .crate of every locked version.
    Warm(WarmArgs),
}

#[derive(Args)]
struct WarmArgs {
    /// Base URL of the running mirror.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    mirror: String,
    /// Cargo.lock files whose registry packages to fetch (repeatable).
    #[arg(long, value_name = "PATH")]
    lockfile: Vec<PathBuf>,
    /// Crates whose index files to fetch (repeatable).
    #[arg(long = "crate", value_name = "NAME")]
    crates: Vec<String>,
    /// Requests at a time.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
}

/// Every flag is optional here: unset flags fall through to the environment
/// (`CRATE_MIRROR_<KEY>`), the config file and the defaults, in that order.
#[derive(Args)]
struct SettingsArgs {
    /// TOML file with the same keys as the flags (also CRATE_MIRROR_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Sparse index base URL of the registry to cache (required).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// Directory for the database, crate files and temp files [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// URL clients use to reach the mirror [default: from the request's Host].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Seconds an index file is served before asking the upstream [default: 60].
    #[arg(long, value_name = "SECONDS")]
    index_ttl: Option<String>,
    /// Seconds past --index-ttl an index file is served at once while it is
    /// refreshed in the background; 0: clients wait for the upstream [default: 600].
    #[arg(long, value_name = "SECONDS")]
    index_max_stale: Option<String>,
    /// Seconds a missing crate is remembered [default: 30].
    #[arg(long, value_name = "SECONDS")]
    negative_ttl: Option<String>,
    /// Bytes of index files kept in memory, e.g. 256MiB [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    hot_cache_size: Option<String>,
    /// Bytes of the most requested crate files kept in memory; 0 for none [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    crate_cache_size: Option<String>,
    /// Seconds for an index fetch and for each read of a download [default: 30].
    #[arg(long, value_name = "SECONDS")]
    upstream_timeout: Option<String>,
    /// Seconds to connect to the upstream [default: 5].
    #[arg(long, value_name = "SECONDS")]
    connect_timeout: Option<String>,
    /// `text` or `json` [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// `local` or `s3://BUCKET[/PREFIX]` (S3 credentials from AWS_* variables) [default: local].
    #[arg(long, value_name = "LOCATION")]
    storage: Option<String>,
    /// Local storage quota, e.g. 50GiB; least recently used crates are evicted [default: unbounded].
    #[arg(long, value_name = "SIZE")]
    max_storage: Option<String>,
    /// Answer S3 hits with a redirect to a presigned URL.
    #[arg(long)]
    s3_redirect: bool,
    /// `on` serves a git index at /git/index (needs git and --public-url) [default: off].
    #[arg(long, value_name = "on|off")]
    git_index: Option<String>,
    /// Seconds after index files change before the git index is rebuilt [default: 2].
    #[arg(long, value_name = "SECONDS")]
    git_rebuild_delay: Option<String>,
    /// Comma-separated token hashes (`sha256:HEX`); any makes the mirror private.
    #[arg(long, value_name = "HASHES")]
    auth_tokens: Option<String>,
    /// Token hashes required by /metrics and /api/stats [default: open].
    #[arg(long, value_name = "HASHES")]
    metrics_tokens: Option<String>,
    /// Addresses or CIDR blocks whose Forwarded / X-Forwarded-* headers are believed [default: none].
    #[arg(long, value_name = "ADDRS")]
    trusted_proxies: Option<String>,
    /// Seconds between forced index revalidations of one crate [default: 10].
    #[arg(long, value_name = "SECONDS")]
    revalidate_interval: Option<String>,
    /// Extra hosts upstream redirects may lead to, comma-separated [default: none].
    #[arg(long, value_name = "HOSTS")]
    upstream_redirect_hosts: Option<String>,
    /// Take S3 credentials from the instance metadata service when no keys are set.
    #[arg(long, value_name = "BOOL")]
    s3_instance_credentials: Option<String>,
    /// Threads that serve HTTP [default: one per CPU].
    #[arg(long, value_name = "N")]
    workers: Option<String>,
    /// Concurrent client connections per worker [default: 4096].
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// Concurrent requests to the upstream [default: 64].
    #[arg(long, value_name = "N")]
    upstream_concurrency: Option<String>,
    /// Seconds in-flight requests get to finish after SIGTERM [default: 30].
    #[arg(long, value_name = "SECONDS")]
    shutdown_timeout: Option<String>,
    /// Prefetch the index files of dependencies: `on` or `off` [default: on].
    #[arg(long, value_name = "on|off")]
    prefetch: Option<String>,
    /// Dependency steps from a client's request that are prefetched [default: 16].
    #[arg(long, value_name = "N")]
    prefetch_depth: Option<String>,
    /// Prefetch requests at a time [default: 32].
    #[arg(long, value_name = "N")]
    prefetch_concurrency: Option<String>,
    /// Prefetch requests per minute at most [default: 1200].
    #[arg(long, value_name = "N")]
    prefetch_budget: Option<String>,
    /// Only `false` is accepted: cargo never resolves dependencies' dev-dependencies.
    #[arg(long, value_name = "BOOL")]
    prefetch_dev_dependencies: Option<String>,
    /// PEM certificate chain: serve HTTPS (HTTP/2 by ALPN) with --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
}

impl SettingsArgs {
    fn flags(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("listen", self.listen.clone()),
            ("upstream", self.upstream.clone()),
            ("data-dir", self.data_dir.clone()),
            ("public-url", self.public_url.clone()),
            ("index-ttl", self.index_ttl.clone()),
            ("index-max-stale", self.index_max_stale.clone()),
            ("negative-ttl", self.negative_ttl.clone()),
            ("hot-cache-size", self.hot_cache_size.clone()),
            ("crate-cache-size", self.crate_cache_size.clone()),
            ("upstream-timeout", self.upstream_timeout.clone()),
            ("connect-timeout", self.connect_timeout.clone()),
            ("log-format", self.log_format.clone()),
            ("storage", self.storage.clone()),
            ("max-storage", self.max_storage.clone()),
            ("s3-redirect", self.s3_redirect.then(|| "true".to_string())),
            ("git-index", self.git_index.clone()),
            ("git-rebuild-delay", self.git_rebuild_delay.clone()),
            ("auth-tokens", self.auth_tokens.clone()),
            ("metrics-tokens", self.metrics_tokens.clone()),
            ("trusted-proxies", self.trusted_proxies.clone()),
            ("revalidate-interval", self.revalidate_interval.clone()),
            (
                "upstream-redirect-hosts",
                self.upstream_redirect_hosts.clone(),
            ),
            (
                "s3-instance-credentials",
                self.s3_instance_credentials.clone(),
            ),
            ("workers", self.workers.clone()),
            ("max-connections", self.max_connections.clone()),
            ("upstream-concurrency", self.upstream_concurrency.clone()),
            ("shutdown-timeout", self.shutdown_timeout.clone()),
            ("prefetch", self.prefetch.clone()),
            ("prefetch-depth", self.prefetch_depth.clone()),
            ("prefetch-concurrency", self.prefetch_concurrency.clone()),
            ("prefetch-budget", self.prefetch_budget.clone()),
            (
                "prefetch-dev-dependencies",
                self.prefetch_dev_dependencies.clone(),
            ),
            ("tls-cert", self.tls_cert.clone()),
            ("tls-key", self.tls_key.clone()),
        ]
    }

    /// The layered raw settings (flags, environment, config file).
    fn raw(&self) -> Result<RawSettings, ConfigError> {
        let config_file = self
            .config
            .clone()
            .or_else(|| std::env::var_os(env_var_name("config")).map(PathBuf::from));
        RawSettings::from_layers(
            &self.flags(),
            |var| std::env::var(var).ok(),
            config_file.as_deref(),
        )
    }

    fn config(&self) -> Result<Config, ConfigError> {
        self.raw()?.build()
    }
}

/// Settings errors end the process with one line and exit code 2.
fn or_exit<T>(result: Result<T, ConfigError>) -> T {
    result.unwrap_or_else(|err| {
        eprintln!("crate-mirror: {err}");
        std::process::exit(2);
    })
}

/// Sets up logging to stderr through a background writer thread, so a request
/// never waits for the write of its log line (the profile showed an unbuffered
/// write per request). The guard flushes on drop: keep it for the process.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Buffered: the writer thread writes each batch of queued lines in one go.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking(stderr);
    crate_mirror::access_log::install(
        format,
        crate_mirror::access_log::writer_sink(writer.clone()),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colours only for a person at a terminal, not in journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

/// Runs the command; an error ends the process with one line on stderr.
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}`: the error and its causes on one line.
            eprintln!("crate-mirror: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The chosen subcommand; its exit code, returned (not `process::exit`) so the
/// log writer is flushed on the way out.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let config = or_exit(args.config());
            let _logging = init_logging(config.log_format);
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            actix_web::rt::System::new().block_on(crate_mirror::serve(config, |addr| {
                // The first line on stdout: scripts and tests read the bound port here.
                println!("crate-mirror listening on {scheme}://{addr}");
                let _ = std::io::stdout().flush();
                tracing::info!(%addr, "listening");
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let config = or_exit(args.config());
            let _logging = init_logging(config.log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(crate_mirror::commands::verify(&config))?;
            println!(
                "checked {}, good {}, bad {} (removed), unverifiable {}",
                report.checked,
                report.good,
                report.bad.len(),
                report.unverifiable.len()
            );
            Ok(if report.bad.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Token => {
            let (token, hash) = crate_mirror::auth::new_token()?;
            println!("token: {token}");
            println!("hash:  {hash}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Warm(args) => {
            let mut plan = crate_mirror::warm::WarmPlan::default();
            for path in &args.lockfile {
                plan.add_lockfile(path)?;
            }
            for name in &args.crates {
                plan.add_crate(name)?;
            }
            let runtime = tokio::runtime::Runtime::new()?;
            let report =
                runtime.block_on(crate_mirror::warm::warm(&args.mirror, &plan, args.jobs))?;
            for (what, why) in &report.failed {
                println!("failed {what}: {why}");
            }
            println!(
                "fetched {}, already cached {}, failed {}",
                report.fetched.len(),
                report.cached.len(),
                report.failed.len()
            );
            Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Gc(args) => {
            let raw = or_exit(args.raw());
            let data_dir = or_exit(raw.data_dir());
            let storage = or_exit(raw.storage());
            let _logging = init_logging(LogFormat::Text);
            let report = crate_mirror::commands::gc(&data_dir, &storage)?;
            println!(
                "evicted {} crates ({} bytes); {} bytes remain",
                report.evicted, report.freed_bytes, report.remaining_bytes
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
