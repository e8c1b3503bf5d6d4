//! The `crate-mirror` command: parses the command line, sets up logging and runs
//! the chosen subcommand.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use crate_mirror::commands::export::ExportError;
use crate_mirror::commands::warm::WarmError;
use crate_mirror::config::{for_command, ConfigError, LogFormat, SettingsArgs};

#[derive(Parser)]
#[command(
    name = "crate-mirror",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUILD_COMMIT"), ")"),
    about = "A caching mirror for Rust's package registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sparse index and crate downloads.
    Serve(SettingsArgs<for_command::Serve>),
    /// Re-hash every stored crate against its index cksum; remove bad ones.
    /// Index files come from the upstream, or from the data dir's own copy
    /// when offline or the upstream cannot be reached. Exits with 1 when it
    /// found any bad, or could check none. Safe beside a running mirror
    /// while the upstream answers.
    Verify(SettingsArgs<for_command::Verify>),
    /// Evict least recently used crates until local storage is under
    /// --max-storage. Needs the data dir to itself (a running mirror evicts
    /// in the background on its own).
    Gc(SettingsArgs<for_command::Gc>),
    /// Make a new client token: prints the token (give it to users) and its
    /// hash (put it in `auth-tokens`).
    Token,
    /// Fill a running mirror's cache: the index file of every package named
    /// and the .crate of every locked version.
    Warm(WarmArgs),
    /// Write a bundle (index files and verified .crate files, one file) for a
    /// site with no route to the upstream: from this data dir, or from a
    /// running mirror with --from. What is missing is fetched first.
    Export(ExportArgs),
    /// Read a bundle into this data dir and storage: every file checked
    /// against the manifest and every crate against its index cksum before
    /// anything is written; merges with what is there; safe to repeat.
    Import(ImportArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// The bundle to write (a gzip'd tar).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Cargo.lock files whose registry packages to bundle (repeatable).
    #[arg(long, value_name = "PATH")]
    lockfile: Vec<PathBuf>,
    /// A crate to bundle (repeatable): NAME for its newest release, NAME@REQ
    /// for the newest release matching REQ (e.g. serde@1.0).
    #[arg(long = "crate", value_name = "NAME[@REQ]")]
    crates: Vec<String>,
    /// Everything the data dir holds.
    #[arg(long)]
    all_cached: bool,
    /// Index files hold only the lines of bundled versions, so a resolve on
    /// the far side picks only what travelled.
    #[arg(long)]
    prune_index: bool,
    /// An earlier bundle (or its manifest.json): leave out what it holds.
    #[arg(long, value_name = "FILE")]
    since: Option<PathBuf>,
    /// Read from this running mirror over HTTP instead of a data dir.
    #[arg(long, value_name = "URL")]
    from: Option<String>,
    /// Token for a private mirror given with --from; also from the
    /// environment variable CRATE_MIRROR_TOKEN.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// PEM file of CA certificates to trust for --from over https.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs<for_command::Export>,
}

#[derive(Args)]
struct ImportArgs {
    /// The bundle to read.
    #[arg(value_name = "FILE")]
    bundle: PathBuf,
    #[command(flatten)]
    settings: SettingsArgs<for_command::Import>,
}

#[derive(Args)]
struct WarmArgs {
    /// Base URL of the running mirror.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    mirror: String,
    /// Cargo.lock files whose registry packages to fetch (repeatable).
    #[arg(long, value_name = "PATH")]
    lockfile: Vec<PathBuf>,
    /// Crates to fetch by name (repeatable): the index file and the newest
    /// release's .crate (not yanked, not a prerelease).
    #[arg(long = "crate", value_name = "NAME")]
    crates: Vec<String>,
    /// Requests at a time.
    #[arg(long, default_value_t = 8)]
    jobs: usize,
    /// PEM file of CA certificates to trust for an https mirror with a private
    /// CA (SSL_CERT_FILE is honoured too).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Token for a private mirror (as cargo sends it); also from the
    /// environment variable CRATE_MIRROR_TOKEN.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

/// Log lines queued for the writer thread before new ones are dropped.
const LOG_QUEUE_LINES: usize = 16_384;

/// Sets up logging to stderr through a background writer thread, so a request
/// never waits for the write of its log line (the profile showed an unbuffered
/// write per request). The guard flushes on drop: keep it for the process.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Buffered: the writer thread writes each batch of queued lines in one go.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    // The queue is allocated whole at start, 32 bytes a line: the default
    // 128,000 lines were 4 MB resident for nothing. 16,384 lines hold a
    // burst of that many requests' access-log lines while the writer
    // catches up; past that, lines are dropped, never a request delayed.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .finish(stderr);
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

/// Runs the command; an error ends the process with one line on stderr and
/// exit code 2 for wrong settings (as for wrong arguments), 1 otherwise.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Usage errors, and `--help` and `--version` (on stdout, code 0).
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1));
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("crate-mirror: {}", one_line(&err));
            let usage = err.is::<ConfigError>()
                || err
                    .downcast_ref::<WarmError>()
                    .is_some_and(WarmError::is_usage)
                || err
                    .downcast_ref::<ExportError>()
                    .is_some_and(ExportError::is_usage);
            if usage {
                ExitCode::from(ConfigError::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The error and its causes on one line, each once: a message that already
/// quotes its cause (`{path}: {source}`) is not followed by it again, as
/// `{:#}` would.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

/// Warns on stderr about environment variables that look like settings but
/// are none, before anything else is printed.
fn warn_about_environment() {
    for warning in crate_mirror::config::env_warnings() {
        eprintln!("crate-mirror: warning: {warning}");
    }
}

/// The exit code of a command that reports what it found wrong: 0 when
/// nothing, else 1, so that scripts can tell without reading the report.
fn found_nothing_wrong(nothing_wrong: bool) -> ExitCode {
    if nothing_wrong {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The chosen subcommand; its exit code, returned (not `process::exit`) so the
/// log writer is flushed on the way out.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            warn_about_environment();
            let config = args.config()?;
            let _logging = init_logging(config.log_format);
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            // What an operator checks first, in one line (no secrets: tokens
            // are counted, S3 keys are not shown, URL user info is masked).
            let started = (
                if config.upstream.is_empty() {
                    "(none)".to_string()
                } else {
                    crate_mirror::config::mask_userinfo(&config.upstream)
                },
                crate_mirror::upstream::proxy_in_use(&config.upstream),
                config
                    .public_url
                    .clone()
                    .unwrap_or_else(|| "(from each request's Host)".into()),
                config.data_dir.clone(),
                config.storage.to_string(),
                match (config.auth_tokens.is_empty(), config.offline) {
                    (true, false) => "public",
                    (false, false) => "private",
                    (true, true) => "public, offline",
                    (false, true) => "private, offline",
                },
            );
            // Every interface and no tokens: anyone who can reach the port can
            // use the mirror and its upstream bandwidth. Often meant (an internal
            // network), sometimes not (a cloud VM with a public address).
            let open_to_all = config.listen.ip().is_unspecified() && config.auth_tokens.is_empty();
            // Private, yet cargo is told to send its tokens over plain http to
            // another machine: anyone on the path can read and reuse them.
            let tokens_in_clear = crate_mirror::operator::tokens_in_clear(&config)
                .then(|| config.public_url.clone().unwrap_or_default());
            actix_web::rt::System::new().block_on(crate_mirror::serve(config, |addr| {
                // The first line on stdout: scripts and tests read the bound port here.
                println!("crate-mirror listening on {scheme}://{addr}");
                let _ = std::io::stdout().flush();
                let (upstream, proxy, public_url, data_dir, storage, mode) = started;
                // Absolute, whatever the command line said: the dir exists
                // by now (one lookup, once, at start).
                let data_dir = std::fs::canonicalize(&data_dir)
                    .unwrap_or(data_dir)
                    .display()
                    .to_string();
                tracing::info!(
                    version = env!("CARGO_PKG_VERSION"),
                    commit = env!("BUILD_COMMIT"),
                    listen = %format!("{scheme}://{addr}"),
                    upstream,
                    proxy,
                    public_url,
                    data_dir,
                    storage,
                    mode,
                    "crate-mirror started"
                );
                if open_to_all {
                    tracing::warn!(
                        listen = %addr,
                        "listening on every interface in public mode: anyone who can reach \
                         this port can use the mirror; firewall it, listen on an internal \
                         address, or set auth-tokens (see docs/security.md, Private mirrors)"
                    );
                }
                if let Some(public_url) = &tokens_in_clear {
                    tracing::warn!(
                        public_url = %crate_mirror::config::mask_userinfo(public_url),
                        "private mirror on a plain http public URL: clients' tokens travel \
                         in clear to it; serve https (tls-cert and tls-key, or a TLS proxy) \
                         and set public-url to its https:// address"
                    );
                }
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            warn_about_environment();
            let config = args.config()?;
            let _logging = init_logging(config.log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(crate_mirror::commands::verify::run(&config))?;
            println!("{report}");
            Ok(found_nothing_wrong(report.passed()))
        }
        Command::Token => {
            let (token, hash) = crate_mirror::auth::new_token()?;
            println!("token: {token}");
            println!("hash:  {hash}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Warm(args) => {
            let mut plan = crate_mirror::commands::warm::WarmPlan::default();
            for path in &args.lockfile {
                plan.add_lockfile(path)?;
            }
            for name in &args.crates {
                plan.add_crate(name)?;
            }
            let runtime = tokio::runtime::Runtime::new()?;
            let connection = connection(&args.cacert, &args.token);
            let report = runtime.block_on(crate_mirror::commands::warm::warm(
                &args.mirror,
                &plan,
                args.jobs,
                &connection,
            ))?;
            for (what, why) in &report.failed {
                println!("failed {what}: {why}");
            }
            println!(
                "fetched {}, already cached {}, failed {}",
                report.fetched.len(),
                report.cached.len(),
                report.failed.len()
            );
            Ok(found_nothing_wrong(report.failed.is_empty()))
        }
        Command::Export(args) => {
            use crate_mirror::commands::export::{export, ExportRequest, Source};
            let request = ExportRequest {
                lockfiles: args.lockfile.clone(),
                crates: args.crates.clone(),
                all_cached: args.all_cached,
                prune_index: args.prune_index,
                since: args.since.clone(),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = match &args.from {
                Some(url) => {
                    let source = Source::remote(url, &connection(&args.cacert, &args.token))?;
                    let staging = tempfile_dir(&args.out)?;
                    runtime.block_on(export(&source, &request, &args.out, staging.path()))?
                }
                None => {
                    warn_about_environment();
                    let config =
                        crate_mirror::commands::export::data_dir_config(&args.settings.raw()?)?;
                    let _logging = init_logging(config.log_format);
                    runtime.block_on(async {
                        let state = crate_mirror::AppState::open(&config).await?;
                        let staging = tempfile_dir(&state.tmp_dir())?;
                        let source = Source::Local(Box::new(state));
                        let report = export(&source, &request, &args.out, staging.path()).await;
                        if let Source::Local(state) = &source {
                            state.flush()?;
                        }
                        anyhow::Ok(report?)
                    })?
                }
            };
            println!("{report} to {}", args.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args) => {
            warn_about_environment();
            let config = args.settings.raw()?.build_offline()?;
            // Before the data dir is opened (and made).
            crate_mirror::commands::import::check_readable(&args.bundle)?;
            let _logging = init_logging(config.log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(async {
                let state = crate_mirror::AppState::open(&config).await?;
                let limits = crate_mirror::bundle::read::ImportLimits {
                    max_crate_bytes: config.import_max_crate_bytes,
                    max_bundle_bytes: config.import_max_bundle_bytes,
                };
                let imported = crate_mirror::commands::import::import(&state, &args.bundle, limits);
                anyhow::Ok(imported.await?)
            })?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc(args) => {
            warn_about_environment();
            let raw = args.raw()?;
            let data_dir = raw.data_dir()?;
            let storage = raw.storage()?;
            let _logging = init_logging(raw.log_format()?);
            let report = crate_mirror::commands::gc::gc(&data_dir, &storage)?;
            println!(
                "evicted {} crates ({} bytes); {} bytes remain",
                report.evicted, report.freed_bytes, report.remaining_bytes
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How `warm` and `export --from` reach a mirror: the CA file given, and the
/// token given or else from the environment.
fn connection(
    cacert: &Option<PathBuf>,
    token: &Option<String>,
) -> crate_mirror::commands::warm::Connection {
    crate_mirror::commands::warm::Connection {
        cacert: cacert.clone(),
        token: token
            .clone()
            .or_else(|| std::env::var(crate_mirror::config::WARM_TOKEN_ENV).ok()),
    }
}

/// A temp dir for staged `.crate` files beside `near` (the bundle, or the
/// data dir's temp dir), removed when dropped.
fn tempfile_dir(near: &std::path::Path) -> std::io::Result<TempDir> {
    let parent = if near.is_dir() {
        near.to_path_buf()
    } else {
        near.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    TempDir::new_in(&parent)
}

/// A directory removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new_in(parent: &std::path::Path) -> std::io::Result<Self> {
        let dir = parent.join(format!(".crate-mirror-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
