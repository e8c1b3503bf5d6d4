//! Every setting, defined once: its key, value name, default, help, parser,
//! whether it is on/off, and the subcommands that take it as a flag.
//!
//! The key is the flag (`--index-ttl`) and the TOML key (`index-ttl`), and gives
//! the environment variable (`CRATE_MIRROR_INDEX_TTL`); the command line of
//! each subcommand and its `--help`, the environment and config file layers,
//! the defaults in `build()` and the settings table in docs/operating.md
//! (checked by a test) are all derived from this list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{
    parse_base_url, parse_bool, parse_count, parse_count_u32, parse_data_dir, parse_hosts,
    parse_listen, parse_log_format, parse_millis, parse_no_dev_dependencies, parse_path,
    parse_positive_seconds, parse_seconds, parse_size, parse_storage, parse_text,
    parse_token_hashes, StorageLocation,
};
use super::parse::{parse_cooldown_mode, parse_crate_rules, parse_release_age};
use super::LogFormat;
use crate::auth::TokenSet;
use crate::policy::{CooldownMode, CrateRule};
use crate::proxies::TrustedProxies;

/// What a setting is when no layer gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// This text, parsed like a given value.
    Value(&'static str),
    /// No value; the text says what the mirror does then (`one per CPU`).
    Absent(&'static str),
    /// No value, and the mirror refuses to start without one.
    Required,
}

/// How a setting's value is written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--key VALUE` (or `--key=VALUE`).
    Value,
    /// On or off: `--key` alone means `true`; `--key=off` and, where the
    /// command takes no operand the word could be mistaken for,
    /// `--key off`. Every layer parses the same words ([`parse_bool`]).
    Bool,
}

/// The environment variable a setting is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// `CRATE_MIRROR_<KEY>`.
    Mirror,
    /// A standard AWS variable, `AWS_<...>`: what every S3 tool reads, so the
    /// same credentials serve them all.
    Aws,
}

/// A subcommand that takes settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    Serve,
    Verify,
    Gc,
    Export,
    Import,
}

impl CommandName {
    pub const ALL: [CommandName; 5] = [
        CommandName::Serve,
        CommandName::Verify,
        CommandName::Gc,
        CommandName::Export,
        CommandName::Import,
    ];

    /// As typed: `serve`, `gc`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Serve => "serve",
            CommandName::Verify => "verify",
            CommandName::Gc => "gc",
            CommandName::Export => "export",
            CommandName::Import => "import",
        }
    }
}

/// The subcommands whose command line takes a setting as a flag (and whose
/// `--help` lists it). The environment and the config file are read whole
/// by every command, so one file serves them all: a command reads there
/// only what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commands(u8);

impl Commands {
    pub const fn of(commands: &[CommandName]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < commands.len() {
            bits |= 1 << commands[i] as u8;
            i += 1;
        }
        Commands(bits)
    }

    pub const fn contains(self, command: CommandName) -> bool {
        self.0 & (1 << command as u8) != 0
    }
}

use CommandName::{Export, Gc, Import, Serve, Verify};

/// Where the data dir is, how to log, which file: every command.
const EVERY: Commands = Commands::of(&CommandName::ALL);
/// What only the server uses.
const SERVE: Commands = Commands::of(&[Serve]);
/// How the upstream is reached: the commands that fetch from it (`verify`
/// for index files to check against, `export` for what a data dir lacks).
const READS_UPSTREAM: Commands = Commands::of(&[Serve, Verify, Export]);
/// How cached index files are kept: the commands that read through the cache.
const READS_INDEX: Commands = Commands::of(&[Serve, Export]);
/// Where crate files are: every command that opens the store (`gc` works on
/// local storage only, under the data dir).
const OPENS_STORAGE: Commands = Commands::of(&[Serve, Verify, Export, Import]);
/// The local quota: the commands that add to local storage, and `gc`.
const WRITES_LOCAL_STORAGE: Commands = Commands::of(&[Serve, Gc, Export, Import]);
/// The database's writes: the commands that write the index.
const OPENS_DATABASE: Commands = Commands::of(&[Serve, Export, Import]);
const IMPORT: Commands = Commands::of(&[Import]);
/// No flag at all: S3 keys, so that they never show in `ps`.
const NO_FLAG: Commands = Commands::of(&[]);

/// The description of one setting, the same whatever its value's type.
#[derive(Debug)]
pub struct About {
    /// Flag name and TOML key (where `_` is accepted for `-`).
    pub key: &'static str,
    /// The placeholder in `--help` and in the missing-setting error.
    pub value_name: &'static str,
    pub fallback: Fallback,
    /// One line for `--help`; the README's table says more.
    pub help: &'static str,
    pub kind: Kind,
    pub env: Env,
    /// The subcommands that take it as a flag.
    pub commands: Commands,
    /// Never shown (the dashboard's settings list says only that it is
    /// set): tokens' hashes and S3 keys.
    pub secret: bool,
}

impl About {
    /// `index-ttl` → `CRATE_MIRROR_INDEX_TTL`; `aws-region` → `AWS_REGION`.
    pub fn env_var(&self) -> String {
        let upper = self.key.replace('-', "_").to_ascii_uppercase();
        match self.env {
            Env::Aws => upper,
            Env::Mirror => format!("{ENV_PREFIX}{upper}"),
        }
    }

    /// The fallback as `--help` and the README show it: `60`, `one per CPU`, `(required)`.
    pub fn fallback_text(&self) -> &'static str {
        match self.fallback {
            Fallback::Value(text) | Fallback::Absent(text) => text,
            Fallback::Required => "(required)",
        }
    }
}

/// The prefix of the mirror's own environment variables.
pub const ENV_PREFIX: &str = "CRATE_MIRROR_";

/// A setting whose values parse to `T`.
pub struct Setting<T: 'static> {
    pub about: About,
    /// Checks and converts one value; the error is one line saying what is expected.
    pub parse: fn(&str) -> Result<T, String>,
}

/// A setting of any value type, for the list that every layer walks.
pub trait AnySetting: Sync {
    fn about(&self) -> &About;
    /// Whether `value` parses; the error says what is expected.
    fn check(&self, value: &str) -> Result<(), String>;
}

impl<T> AnySetting for Setting<T> {
    fn about(&self) -> &About {
        &self.about
    }

    fn check(&self, value: &str) -> Result<(), String> {
        (self.parse)(value).map(drop)
    }
}

/// The config file: chosen by flag or environment like a setting, but not a
/// key in the file itself, so it is not in [`SETTINGS`].
pub static CONFIG_FILE: Setting<PathBuf> = Setting {
    about: About {
        key: "config",
        value_name: "FILE",
        fallback: Fallback::Absent("none"),
        help: "TOML file with the same keys as the flags",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: EVERY,
        secret: false,
    },
    parse: parse_path,
};

pub static LISTEN: Setting<SocketAddr> = Setting {
    about: About {
        key: "listen",
        value_name: "ADDR",
        fallback: Fallback::Value("127.0.0.1:8080"),
        help: "Address and port to listen on; a host name is resolved at start, a bare port means 127.0.0.1",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_listen,
};

pub static UPSTREAM: Setting<String> = Setting {
    about: About {
        key: "upstream",
        value_name: "URL",
        fallback: Fallback::Required,
        help: "Sparse index base URL of the registry to cache",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_UPSTREAM,
        secret: false,
    },
    parse: parse_base_url,
};

pub static OFFLINE: Setting<bool> = Setting {
    about: About {
        key: "offline",
        value_name: "BOOL",
        fallback: Fallback::Value("false"),
        help: "Serve only what is cached or imported and never ask an upstream (--upstream not needed)",
        kind: Kind::Bool,
        env: Env::Mirror,
        commands: READS_UPSTREAM,
        secret: false,
    },
    parse: parse_bool,
};

pub static DATA_DIR: Setting<PathBuf> = Setting {
    about: About {
        key: "data-dir",
        value_name: "DIR",
        fallback: Fallback::Value("./data"),
        help: "Directory for the database, crate files and temp files",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: EVERY,
        secret: false,
    },
    parse: parse_data_dir,
};

pub static PUBLIC_URL: Setting<String> = Setting {
    about: About {
        key: "public-url",
        value_name: "URL",
        fallback: Fallback::Absent("from the request's Host header"),
        help: "URL clients use to reach the mirror",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_base_url,
};

pub static INDEX_TTL: Setting<Duration> = Setting {
    about: About {
        key: "index-ttl",
        value_name: "SECONDS",
        fallback: Fallback::Value("60"),
        help: "Seconds an index file is served before asking the upstream",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_UPSTREAM,
        secret: false,
    },
    parse: parse_seconds,
};

pub static INDEX_MAX_STALE: Setting<Duration> = Setting {
    about: About {
        key: "index-max-stale",
        value_name: "SECONDS",
        fallback: Fallback::Value("600"),
        help: "Seconds past --index-ttl an index file is served at once while it is refreshed in the background; 0: clients wait for the upstream",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_INDEX,
        secret: false,
    },
    parse: parse_seconds,
};

pub static NEGATIVE_TTL: Setting<Duration> = Setting {
    about: About {
        key: "negative-ttl",
        value_name: "SECONDS",
        fallback: Fallback::Value("30"),
        help: "Seconds a missing crate is remembered",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_INDEX,
        secret: false,
    },
    parse: parse_seconds,
};

pub static HOT_CACHE_SIZE: Setting<u64> = Setting {
    about: About {
        key: "hot-cache-size",
        value_name: "SIZE",
        fallback: Fallback::Value("256MiB"),
        help: "Bytes of index files kept in memory, e.g. 256MiB",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_size,
};

pub static CRATE_CACHE_SIZE: Setting<u64> = Setting {
    about: About {
        key: "crate-cache-size",
        value_name: "SIZE",
        fallback: Fallback::Value("64MiB"),
        help: "Bytes of the most requested crate files kept in memory; 0 for none",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_size,
};

pub static UPSTREAM_TIMEOUT: Setting<Duration> = Setting {
    about: About {
        key: "upstream-timeout",
        value_name: "SECONDS",
        fallback: Fallback::Value("30"),
        help: "Seconds for an index fetch and for each read of a download",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_UPSTREAM,
        secret: false,
    },
    parse: parse_positive_seconds,
};

pub static CONNECT_TIMEOUT: Setting<Duration> = Setting {
    about: About {
        key: "connect-timeout",
        value_name: "SECONDS",
        fallback: Fallback::Value("5"),
        help: "Seconds to connect to the upstream",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_UPSTREAM,
        secret: false,
    },
    parse: parse_positive_seconds,
};

pub static LOG_FORMAT: Setting<LogFormat> = Setting {
    about: About {
        key: "log-format",
        value_name: "FORMAT",
        fallback: Fallback::Value("text"),
        help: "`text` or `json`",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: EVERY,
        secret: false,
    },
    parse: parse_log_format,
};

pub static GIT_INDEX: Setting<bool> = Setting {
    about: About {
        key: "git-index",
        value_name: "on|off",
        fallback: Fallback::Value("off"),
        help: "`on` serves a git index at /git/index (needs git and --public-url)",
        kind: Kind::Bool,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_bool,
};

pub static GIT_REBUILD_DELAY: Setting<Duration> = Setting {
    about: About {
        key: "git-rebuild-delay",
        value_name: "SECONDS",
        fallback: Fallback::Value("2"),
        help: "Seconds after index files change before the git index is rebuilt",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_seconds,
};

pub static AUTH_TOKENS: Setting<TokenSet> = Setting {
    about: About {
        key: "auth-tokens",
        value_name: "HASHES",
        fallback: Fallback::Absent("none (public)"),
        help: "Comma-separated token hashes (`sha256:HEX`); any makes the mirror private",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: true,
    },
    parse: parse_token_hashes,
};

pub static METRICS_TOKENS: Setting<TokenSet> = Setting {
    about: About {
        key: "metrics-tokens",
        value_name: "HASHES",
        fallback: Fallback::Absent("none (open)"),
        help: "Token hashes required by /metrics and /api/stats",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: true,
    },
    parse: parse_token_hashes,
};

pub static TRUSTED_PROXIES: Setting<TrustedProxies> = Setting {
    about: About {
        key: "trusted-proxies",
        value_name: "ADDRS",
        fallback: Fallback::Absent("none"),
        help: "Addresses or CIDR blocks whose Forwarded / X-Forwarded-* headers are believed",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: TrustedProxies::parse,
};

/// cargo over plain http asks for `Upgrade: h2c` and then multiplexes; a
/// deployment whose front proxy forwards `Upgrade` may want it off all the
/// same (HTTP/2 by prior knowledge is unaffected).
pub static H2C_UPGRADE: Setting<bool> = Setting {
    about: About {
        key: "h2c-upgrade",
        value_name: "on|off",
        fallback: Fallback::Value("on"),
        help:
            "`off` declines `Upgrade: h2c` on the plain listener (HTTP/2 by prior knowledge stays)",
        kind: Kind::Bool,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_bool,
};

pub static REVALIDATE_INTERVAL: Setting<Duration> = Setting {
    about: About {
        key: "revalidate-interval",
        value_name: "SECONDS",
        fallback: Fallback::Value("10"),
        help: "Seconds between forced index revalidations of one crate",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_seconds,
};

pub static UPSTREAM_REDIRECT_HOSTS: Setting<Vec<String>> = Setting {
    about: About {
        key: "upstream-redirect-hosts",
        value_name: "HOSTS",
        fallback: Fallback::Absent("none"),
        help: "Extra hosts upstream redirects may lead to, comma-separated",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_UPSTREAM,
        secret: false,
    },
    parse: parse_hosts,
};

// The supply-chain policy (docs/operating.md, "Supply-chain policy"). Only
// `serve` applies it so far; `export` and `warm` are to follow it later.

pub static MIN_RELEASE_AGE: Setting<Duration> = Setting {
    about: About {
        key: "min-release-age",
        value_name: "AGE",
        fallback: Fallback::Value("0"),
        help: "Hold back versions published less than this ago (72h, 3d, 2w; 0: off)",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_release_age,
};

pub static MIN_RELEASE_AGE_MODE: Setting<CooldownMode> = Setting {
    about: About {
        key: "min-release-age-mode",
        value_name: "MODE",
        fallback: Fallback::Value("yank"),
        help: "How a held-back version is served: yank (marked yanked) or hide (left out)",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_cooldown_mode,
};

pub static RELEASE_AGE_EXEMPT: Setting<Vec<CrateRule>> = Setting {
    about: About {
        key: "release-age-exempt",
        value_name: "RULES",
        fallback: Fallback::Absent("none"),
        help: "Crates (name or name@requirement, ;-separated) the release cooldown skips",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_crate_rules,
};

pub static DENY: Setting<Vec<CrateRule>> = Setting {
    about: About {
        key: "deny",
        value_name: "RULES",
        fallback: Fallback::Absent("none"),
        help: "Versions never served (name or name@requirement, ;-separated); downloads get 403",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_crate_rules,
};

pub static WORKERS: Setting<usize> = Setting {
    about: About {
        key: "workers",
        value_name: "N",
        fallback: Fallback::Absent("one per CPU"),
        help: "Threads that serve HTTP",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_count,
};

pub static MAX_CONNECTIONS: Setting<usize> = Setting {
    about: About {
        key: "max-connections",
        value_name: "N",
        fallback: Fallback::Value("1024"),
        help: "Concurrent client connections per worker (each holds up to ~64 KiB of buffers)",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_count,
};

pub static KEEP_ALIVE: Setting<Duration> = Setting {
    about: About {
        key: "keep-alive",
        value_name: "SECONDS",
        fallback: Fallback::Value("75"),
        help: "Seconds an idle client connection is kept open; also how long an HTTP/2 client has to answer a PING",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_positive_seconds,
};

pub static UPSTREAM_CONCURRENCY: Setting<usize> = Setting {
    about: About {
        key: "upstream-concurrency",
        value_name: "N",
        fallback: Fallback::Value("64"),
        help: "Concurrent requests to the upstream",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: READS_UPSTREAM,
        secret: false,
    },
    parse: parse_count,
};

pub static SHUTDOWN_TIMEOUT: Setting<Duration> = Setting {
    about: About {
        key: "shutdown-timeout",
        value_name: "SECONDS",
        fallback: Fallback::Value("30"),
        help: "Seconds in-flight requests get to finish after SIGTERM",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_seconds,
};

pub static DB_FLUSH_INTERVAL: Setting<Duration> = Setting {
    about: About {
        key: "db-flush-interval",
        value_name: "MS",
        fallback: Fallback::Value("500"),
        help: "Milliseconds between writes of the database to disk; 0: only at shutdown (what a crash can lose of the cached index)",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: OPENS_DATABASE,
        secret: false,
    },
    parse: parse_millis,
};

pub static PREFETCH: Setting<bool> = Setting {
    about: About {
        key: "prefetch",
        value_name: "on|off",
        fallback: Fallback::Value("on"),
        help: "Prefetch the index files of dependencies",
        kind: Kind::Bool,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_bool,
};

pub static PREFETCH_DEPTH: Setting<u32> = Setting {
    about: About {
        key: "prefetch-depth",
        value_name: "N",
        fallback: Fallback::Value("16"),
        help: "Dependency steps from a client's request that are prefetched",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_count_u32,
};

pub static PREFETCH_CONCURRENCY: Setting<usize> = Setting {
    about: About {
        key: "prefetch-concurrency",
        value_name: "N",
        fallback: Fallback::Value("32"),
        help: "Prefetch requests at a time (kept below --upstream-concurrency)",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_count,
};

pub static PREFETCH_BUDGET: Setting<u32> = Setting {
    about: About {
        key: "prefetch-budget",
        value_name: "N",
        fallback: Fallback::Value("1200"),
        help: "Prefetch requests per minute at most",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_count_u32,
};

pub static PREFETCH_DEV_DEPENDENCIES: Setting<()> = Setting {
    about: About {
        key: "prefetch-dev-dependencies",
        value_name: "BOOL",
        fallback: Fallback::Value("false"),
        help: "Only `false` is accepted: cargo never resolves dependencies' dev-dependencies",
        kind: Kind::Bool,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_no_dev_dependencies,
};

pub static TLS_CERT: Setting<PathBuf> = Setting {
    about: About {
        key: "tls-cert",
        value_name: "FILE",
        fallback: Fallback::Absent("none (plain HTTP)"),
        help: "PEM certificate chain: serve HTTPS (HTTP/2 by ALPN) with --tls-key",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_path,
};

pub static TLS_KEY: Setting<PathBuf> = Setting {
    about: About {
        key: "tls-key",
        value_name: "FILE",
        fallback: Fallback::Absent("none (plain HTTP)"),
        help: "PEM private key for --tls-cert",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_path,
};

pub static STORAGE: Setting<StorageLocation> = Setting {
    about: About {
        key: "storage",
        value_name: "LOCATION",
        fallback: Fallback::Value("local"),
        help: "`local` or `s3://BUCKET[/PREFIX]` (S3 credentials from AWS_* variables)",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: OPENS_STORAGE,
        secret: false,
    },
    parse: parse_storage,
};

pub static MAX_STORAGE: Setting<u64> = Setting {
    about: About {
        key: "max-storage",
        value_name: "SIZE",
        fallback: Fallback::Absent("unbounded"),
        help: "Local storage quota, e.g. 50GiB; least recently used crates are evicted",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: WRITES_LOCAL_STORAGE,
        secret: false,
    },
    parse: parse_size,
};

pub static IMPORT_MAX_CRATE_SIZE: Setting<u64> = Setting {
    about: About {
        key: "import-max-crate-size",
        value_name: "SIZE",
        fallback: Fallback::Value("64MiB"),
        help: "Largest .crate file `import` takes from a bundle",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: IMPORT,
        secret: false,
    },
    parse: parse_size,
};

pub static IMPORT_MAX_BUNDLE_SIZE: Setting<u64> = Setting {
    about: About {
        key: "import-max-bundle-size",
        value_name: "SIZE",
        fallback: Fallback::Value("64GiB"),
        help: "Most bytes `import` decompresses and stages from one bundle",
        kind: Kind::Value,
        env: Env::Mirror,
        commands: IMPORT,
        secret: false,
    },
    parse: parse_size,
};

pub static S3_REDIRECT: Setting<bool> = Setting {
    about: About {
        key: "s3-redirect",
        value_name: "BOOL",
        fallback: Fallback::Value("false"),
        help: "Answer S3 hits with a redirect to a presigned URL",
        kind: Kind::Bool,
        env: Env::Mirror,
        commands: SERVE,
        secret: false,
    },
    parse: parse_bool,
};

pub static AWS_ACCESS_KEY_ID: Setting<String> = Setting {
    about: About {
        key: "aws-access-key-id",
        value_name: "KEY",
        fallback: Fallback::Absent("none"),
        help: "S3 access key",
        kind: Kind::Value,
        env: Env::Aws,
        commands: NO_FLAG,
        secret: true,
    },
    parse: parse_text,
};

pub static AWS_SECRET_ACCESS_KEY: Setting<String> = Setting {
    about: About {
        key: "aws-secret-access-key",
        value_name: "KEY",
        fallback: Fallback::Absent("none"),
        help: "S3 secret key",
        kind: Kind::Value,
        env: Env::Aws,
        commands: NO_FLAG,
        secret: true,
    },
    parse: parse_text,
};

pub static AWS_REGION: Setting<String> = Setting {
    about: About {
        key: "aws-region",
        value_name: "REGION",
        fallback: Fallback::Value("us-east-1"),
        help: "S3 region",
        kind: Kind::Value,
        env: Env::Aws,
        commands: OPENS_STORAGE,
        secret: false,
    },
    parse: parse_text,
};

pub static AWS_ENDPOINT_URL: Setting<String> = Setting {
    about: About {
        key: "aws-endpoint-url",
        value_name: "URL",
        fallback: Fallback::Absent("AWS"),
        help: "S3-compatible endpoint",
        kind: Kind::Value,
        env: Env::Aws,
        commands: OPENS_STORAGE,
        secret: false,
    },
    parse: parse_base_url,
};

pub static AWS_ALLOW_HTTP: Setting<bool> = Setting {
    about: About {
        key: "aws-allow-http",
        value_name: "BOOL",
        fallback: Fallback::Value("false"),
        help: "Allow a plain-http S3 endpoint",
        kind: Kind::Bool,
        env: Env::Aws,
        commands: OPENS_STORAGE,
        secret: false,
    },
    parse: parse_bool,
};

pub static S3_INSTANCE_CREDENTIALS: Setting<bool> = Setting {
    about: About {
        key: "s3-instance-credentials",
        value_name: "BOOL",
        fallback: Fallback::Value("false"),
        help: "Take S3 credentials from the instance metadata service when no keys are set",
        kind: Kind::Bool,
        env: Env::Mirror,
        commands: OPENS_STORAGE,
        secret: false,
    },
    parse: parse_bool,
};

/// Every setting, in `--help` order. A setting defined above but missing here
/// would never be read from any layer; a debug assertion in `RawSettings`
/// catches its lookup in any test that builds a `Config`.
pub static SETTINGS: &[&dyn AnySetting] = &[
    &LISTEN,
    &UPSTREAM,
    &OFFLINE,
    &DATA_DIR,
    &PUBLIC_URL,
    &INDEX_TTL,
    &INDEX_MAX_STALE,
    &NEGATIVE_TTL,
    &HOT_CACHE_SIZE,
    &CRATE_CACHE_SIZE,
    &UPSTREAM_TIMEOUT,
    &CONNECT_TIMEOUT,
    &LOG_FORMAT,
    &GIT_INDEX,
    &GIT_REBUILD_DELAY,
    &AUTH_TOKENS,
    &METRICS_TOKENS,
    &TRUSTED_PROXIES,
    &H2C_UPGRADE,
    &REVALIDATE_INTERVAL,
    &UPSTREAM_REDIRECT_HOSTS,
    &MIN_RELEASE_AGE,
    &MIN_RELEASE_AGE_MODE,
    &RELEASE_AGE_EXEMPT,
    &DENY,
    &WORKERS,
    &MAX_CONNECTIONS,
    &KEEP_ALIVE,
    &UPSTREAM_CONCURRENCY,
    &SHUTDOWN_TIMEOUT,
    &DB_FLUSH_INTERVAL,
    &PREFETCH,
    &PREFETCH_DEPTH,
    &PREFETCH_CONCURRENCY,
    &PREFETCH_BUDGET,
    &PREFETCH_DEV_DEPENDENCIES,
    &TLS_CERT,
    &TLS_KEY,
    &STORAGE,
    &MAX_STORAGE,
    &IMPORT_MAX_CRATE_SIZE,
    &IMPORT_MAX_BUNDLE_SIZE,
    &S3_REDIRECT,
    &AWS_ACCESS_KEY_ID,
    &AWS_SECRET_ACCESS_KEY,
    &AWS_REGION,
    &AWS_ENDPOINT_URL,
    &AWS_ALLOW_HTTP,
    &S3_INSTANCE_CREDENTIALS,
];

/// The listed setting with this key.
pub fn find(key: &str) -> Option<&'static About> {
    SETTINGS.iter().map(|s| s.about()).find(|a| a.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_with_its_own_parser() {
        for setting in SETTINGS {
            let about = setting.about();
            if let Fallback::Value(default) = about.fallback {
                assert_eq!(setting.check(default), Ok(()), "{}", about.key);
            }
        }
    }

    #[test]
    fn keys_and_environment_variables_are_unique_and_well_formed() {
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.about().key).collect();
        keys.push(CONFIG_FILE.about.key);
        for key in &keys {
            assert!(
                key.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{key}"
            );
        }
        let count = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), count, "a key is defined twice");
        for setting in SETTINGS {
            let about = setting.about();
            assert!(!about.help.is_empty() && !about.value_name.is_empty());
            assert_eq!(
                about.key.starts_with("aws-"),
                about.env == Env::Aws,
                "{}: only AWS settings use the AWS_* variables",
                about.key
            );
            assert_eq!(
                about.commands == NO_FLAG,
                about.secret && about.env == Env::Aws,
                "{}: every setting is a flag but the S3 keys",
                about.key
            );
            // What names a token or a key is never shown.
            let sounds_secret = ["token", "secret", "key-id"]
                .iter()
                .any(|word| about.key.contains(word));
            assert_eq!(sounds_secret, about.secret, "{}: secret", about.key);
        }
    }

    /// A setting that takes `on` and refuses `maybe` is a switch: its flag
    /// stands alone, and the other way round.
    #[test]
    fn every_on_off_setting_is_a_bool_flag() {
        for setting in SETTINGS {
            let about = setting.about();
            let on_off = setting.check("off").is_ok() && setting.check("maybe").is_err();
            assert_eq!(on_off, about.kind == Kind::Bool, "{}", about.key);
        }
    }

    #[test]
    fn command_sets() {
        assert!(EVERY.contains(Gc) && EVERY.contains(Import));
        assert!(SERVE.contains(Serve) && !SERVE.contains(Gc));
        assert!(!READS_UPSTREAM.contains(Gc) && !READS_UPSTREAM.contains(Import));
        assert!(CommandName::ALL.iter().all(|c| !NO_FLAG.contains(*c)));
        // Every command takes the data dir and the config file.
        for command in CommandName::ALL {
            assert!(DATA_DIR.about.commands.contains(command));
            assert!(CONFIG_FILE.about.commands.contains(command));
        }
    }

    #[test]
    fn environment_variable_names_derive_from_keys() {
        assert_eq!(INDEX_TTL.about.env_var(), "CRATE_MIRROR_INDEX_TTL");
        assert_eq!(UPSTREAM.about.env_var(), "CRATE_MIRROR_UPSTREAM");
        assert_eq!(CONFIG_FILE.about.env_var(), "CRATE_MIRROR_CONFIG");
        assert_eq!(AWS_REGION.about.env_var(), "AWS_REGION");
    }
}
