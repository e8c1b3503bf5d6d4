//! The mirror's settings: each defined once ([`defs`]), given by flag,
//! environment (`CRATE_MIRROR_<KEY>`) or config file ([`layers`]), parsed one
//! value at a time ([`parse`]) and checked against each other here, in
//! [`RawSettings::build`], into a [`Config`].

mod cli;
pub mod defs;
mod layers;
mod parse;
mod shown;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{env_warnings, for_command, SettingsArgs, SettingsCommand};
pub use defs::{About, AnySetting, CommandName, Commands, Env, Fallback, Kind, SETTINGS};
pub use layers::{RawSettings, Source, WARM_TOKEN_ENV};
pub use parse::parse_size;
pub use shown::{mask_userinfo, ShownSetting, HIDDEN};

use crate::auth::TokenSet;
use crate::prefetch::PrefetchPolicy;
use crate::proxies::TrustedProxies;
use defs::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for `{key}` (from {origin}): {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        origin: Source,
        reason: String,
    },
    #[error(
        "`{key}` is required: pass --{key} {value_name}, set {env}, or put it in the config file",
        key = .0.key,
        value_name = .0.value_name,
        env = .0.env_var()
    )]
    Missing(&'static About),
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("unknown key `{key}` in config file {path} (closest: `{closest}`)")]
    UnknownKey {
        key: String,
        closest: &'static str,
        path: PathBuf,
    },
}

impl ConfigError {
    /// The process's exit code for wrong settings, as clap's for wrong arguments.
    pub const EXIT_CODE: u8 = 2;
}

/// Validated settings for `serve` and the maintenance commands.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Base URL of the upstream sparse index, always ending in `/`; empty
    /// when offline without one.
    pub upstream: String,
    /// Never ask the upstream: serve what is cached or imported (air-gapped
    /// sites); a miss is a 404 that says so.
    pub offline: bool,
    pub data_dir: PathBuf,
    /// Without a trailing slash.
    pub public_url: Option<String>,
    pub index_ttl: Duration,
    /// Past `index_ttl`, how long a file is served at once while refreshed.
    pub index_max_stale: Duration,
    pub negative_ttl: Duration,
    pub hot_cache_bytes: u64,
    /// Memory for hot crate files; 0 turns that cache off.
    pub crate_cache_bytes: u64,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub log_format: LogFormat,
    pub storage: StorageConfig,
    /// Serve the git index; `public_url` is then set.
    pub git_index: bool,
    pub git_rebuild_delay: Duration,
    /// Client tokens; non-empty makes the mirror private.
    pub auth_tokens: TokenSet,
    pub metrics_tokens: TokenSet,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Answer cargo's `Upgrade: h2c` on the plain listener (see `http::h2c`).
    pub h2c_upgrade: bool,
    /// At most one forced revalidation of a crate's index file per this.
    pub revalidate_interval: Duration,
    /// Hosts besides the upstream's own that its redirects may lead to.
    pub upstream_redirect_hosts: Vec<String>,
    /// The supply-chain policy the index cache applies (`serve` only so far).
    pub policy: crate::policy::Policy,
    /// HTTP worker threads; `None`: one per CPU.
    pub workers: Option<usize>,
    pub max_connections: usize,
    /// Idle client connections are closed after this; an HTTP/2 client has
    /// as long again to answer the PING sent after it.
    pub keep_alive: Duration,
    pub upstream_concurrency: usize,
    pub shutdown_timeout: Duration,
    /// Between sled's writes to disk; zero: only when asked (at shutdown).
    pub db_flush_interval: Duration,
    /// Certificate chain and key files, when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `None` when prefetch is off.
    pub prefetch: Option<PrefetchPolicy>,
    /// The largest `.crate` file an import takes from a bundle.
    pub import_max_crate_bytes: u64,
    /// The most bytes an import decompresses and stages from one bundle.
    pub import_max_bundle_bytes: u64,
    /// Every setting as an operator may see it (secrets hidden).
    pub shown: Vec<ShownSetting>,
}

/// Where crate files are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    Local {
        /// Quota in bytes; `None` is unbounded.
        max_bytes: Option<u64>,
    },
    S3(S3Config),
}

impl std::fmt::Display for StorageConfig {
    /// As an operator reads it in the start line: `local`, `local, quota N
    /// bytes`, `s3://BUCKET/PREFIX` (no credentials).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageConfig::Local { max_bytes: None } => write!(f, "local"),
            StorageConfig::Local {
                max_bytes: Some(max),
            } => write!(f, "local, quota {max} bytes"),
            StorageConfig::S3(s3) if s3.prefix.is_empty() => write!(f, "s3://{}", s3.bucket),
            StorageConfig::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix without leading or trailing slashes (may be empty).
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: String,
    pub endpoint: Option<String>,
    pub allow_http: bool,
    /// Answer hits with a redirect to a presigned URL.
    pub redirect: bool,
    /// Ask the instance metadata service for credentials when no keys are set.
    pub instance_credentials: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl RawSettings {
    /// Builds the validated configuration.
    pub fn build(&self) -> Result<Config, ConfigError> {
        self.build_as(self.value(&OFFLINE)?)
    }

    /// The configuration with the upstream never asked, whatever `offline`
    /// says: for commands that only read and write the data dir (`import`).
    pub fn build_offline(&self) -> Result<Config, ConfigError> {
        self.build_as(true)
    }

    fn build_as(&self, offline: bool) -> Result<Config, ConfigError> {
        let upstream = if offline {
            self.get(&UPSTREAM)?.unwrap_or_default()
        } else {
            self.value(&UPSTREAM)?
        };
        let public_url = self
            .get(&PUBLIC_URL)?
            .map(|url| url.trim_end_matches('/').to_string());
        let git_index = self.value(&GIT_INDEX)?;
        if git_index && public_url.is_none() {
            return Err(self.invalid(
                &GIT_INDEX.about,
                "the git index needs --public-url: its config.json is fixed in the repository, not taken from each request's Host",
            ));
        }
        let auth_tokens = self.get(&AUTH_TOKENS)?.unwrap_or_default();
        if !auth_tokens.is_empty() && public_url.is_none() {
            return Err(self.invalid(
                &AUTH_TOKENS.about,
                "a private mirror needs --public-url: config.json tells cargo where to send its token, and that must not come from a request's Host header",
            ));
        }
        Ok(Config {
            listen: self.value(&LISTEN)?,
            upstream,
            offline,
            data_dir: self.data_dir()?,
            public_url,
            index_ttl: self.value(&INDEX_TTL)?,
            index_max_stale: self.value(&INDEX_MAX_STALE)?,
            negative_ttl: self.value(&NEGATIVE_TTL)?,
            hot_cache_bytes: self.value(&HOT_CACHE_SIZE)?,
            crate_cache_bytes: self.value(&CRATE_CACHE_SIZE)?,
            upstream_timeout: self.value(&UPSTREAM_TIMEOUT)?,
            connect_timeout: self.value(&CONNECT_TIMEOUT)?,
            log_format: self.value(&LOG_FORMAT)?,
            storage: self.storage()?,
            git_index,
            git_rebuild_delay: self.value(&GIT_REBUILD_DELAY)?,
            auth_tokens,
            metrics_tokens: self.get(&METRICS_TOKENS)?.unwrap_or_default(),
            trusted_proxies: self.get(&TRUSTED_PROXIES)?.unwrap_or_default(),
            h2c_upgrade: self.value(&H2C_UPGRADE)?,
            revalidate_interval: self.value(&REVALIDATE_INTERVAL)?,
            upstream_redirect_hosts: self.get(&UPSTREAM_REDIRECT_HOSTS)?.unwrap_or_default(),
            policy: crate::policy::Policy {
                min_release_age: self.value(&MIN_RELEASE_AGE)?,
                mode: self.value(&MIN_RELEASE_AGE_MODE)?,
                exempt: self.get(&RELEASE_AGE_EXEMPT)?.unwrap_or_default(),
                deny: self.get(&DENY)?.unwrap_or_default(),
            },
            workers: self.get(&WORKERS)?,
            max_connections: self.value(&MAX_CONNECTIONS)?,
            keep_alive: self.value(&KEEP_ALIVE)?,
            upstream_concurrency: self.value(&UPSTREAM_CONCURRENCY)?,
            shutdown_timeout: self.value(&SHUTDOWN_TIMEOUT)?,
            db_flush_interval: self.value(&DB_FLUSH_INTERVAL)?,
            tls: self.tls()?,
            // Nothing to prefetch from offline.
            prefetch: if offline { None } else { self.prefetch()? },
            import_max_crate_bytes: self.value(&IMPORT_MAX_CRATE_SIZE)?,
            import_max_bundle_bytes: self.value(&IMPORT_MAX_BUNDLE_SIZE)?,
            shown: self.shown(),
        })
    }

    fn prefetch(&self) -> Result<Option<PrefetchPolicy>, ConfigError> {
        if !self.value(&PREFETCH)? {
            return Ok(None);
        }
        self.value(&PREFETCH_DEV_DEPENDENCIES)?;
        let upstream_concurrency = self.value(&UPSTREAM_CONCURRENCY)?;
        Ok(Some(PrefetchPolicy {
            depth: self.value(&PREFETCH_DEPTH)?,
            // Below the upstream's limit, so a client always finds a free slot.
            concurrency: self
                .value(&PREFETCH_CONCURRENCY)?
                .min(upstream_concurrency.saturating_sub(1).max(1)),
            budget_per_minute: self.value(&PREFETCH_BUDGET)?,
        }))
    }

    fn tls(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (self.get(&TLS_CERT)?, self.get(&TLS_KEY)?) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.invalid(&TLS_CERT.about, "needs tls-key too")),
            (None, Some(_)) => Err(self.invalid(&TLS_KEY.about, "needs tls-cert too")),
        }
    }

    /// The log format alone, for commands that build no whole [`Config`].
    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        self.value(&LOG_FORMAT)
    }

    /// The data dir alone, for commands that need no upstream.
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        self.value(&DATA_DIR)
    }

    /// The storage settings alone, for commands that need no upstream.
    pub fn storage(&self) -> Result<StorageConfig, ConfigError> {
        let max_bytes = self.get(&MAX_STORAGE)?;
        let redirect = self.value(&S3_REDIRECT)?;
        let Some((bucket, prefix)) = self.value(&STORAGE)? else {
            if redirect {
                return Err(self.invalid(&S3_REDIRECT.about, "needs --storage s3://..."));
            }
            return Ok(StorageConfig::Local { max_bytes });
        };
        if max_bytes.is_some() {
            return Err(self.invalid(&MAX_STORAGE.about, "applies to local storage only"));
        }
        Ok(StorageConfig::S3(S3Config {
            bucket,
            prefix,
            access_key_id: self.get(&AWS_ACCESS_KEY_ID)?,
            secret_access_key: self.get(&AWS_SECRET_ACCESS_KEY)?,
            region: self.value(&AWS_REGION)?,
            endpoint: self
                .get(&AWS_ENDPOINT_URL)?
                .map(|url| url.trim_end_matches('/').to_string()),
            allow_http: self.value(&AWS_ALLOW_HTTP)?,
            redirect,
            instance_credentials: self.value(&S3_INSTANCE_CREDENTIALS)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// A config file holding `text`; it lives as long as the returned dir.
    fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirror.toml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    #[test]
    fn policy_lists_come_from_file_arrays_env_and_flags_commas_and_all() {
        let (_dir, file) = config_file(
            "upstream = \"http://file.example.com/index/\"\nmin-release-age = \"3d\"\nmin-release-age-mode = \"hide\"\ndeny = [\"evil-crate\", \"foo@>=1, <2\"]\n",
        );
        let env = env_from(&[("CRATE_MIRROR_RELEASE_AGE_EXEMPT", "tokio; bar@^1.2, <1.5")]);
        let config = RawSettings::from_layers(&[], Some(&file), env)
            .unwrap()
            .build()
            .unwrap();
        let texts = |rules: &[crate::policy::CrateRule]| -> Vec<String> {
            rules.iter().map(|r| r.as_str().to_string()).collect()
        };
        let policy = &config.policy;
        assert_eq!(policy.min_release_age, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(policy.mode, crate::policy::CooldownMode::Hide);
        assert_eq!(texts(&policy.deny), ["evil-crate", "foo@>=1, <2"]);
        assert_eq!(texts(&policy.exempt), ["tokio", "bar@^1.2, <1.5"]);
        let flags = [("deny", "baz@<0.3; qux".to_string())];
        let config = RawSettings::from_layers(&flags, Some(&file), env_from(&[]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(texts(&config.policy.deny), ["baz@<0.3", "qux"]);
        // Off by default.
        let (_dir, bare) = config_file("upstream = \"http://file.example.com/index/\"\n");
        let config = RawSettings::from_layers(&[], Some(&bare), env_from(&[]))
            .unwrap()
            .build()
            .unwrap();
        assert!(!config.policy.is_active());
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_dir, file) = config_file(
            "upstream = \"http://file.example.com/index/\"\nindex-ttl = 5\nnegative_ttl = 7\ndata-dir = \"/from/file\"\n",
        );
        let env = env_from(&[
            ("CRATE_MIRROR_INDEX_TTL", "6"),
            ("CRATE_MIRROR_DATA_DIR", "/from/env"),
        ]);
        let flags = [("data-dir", "/from/flag".to_string())];
        let config = RawSettings::from_layers(&flags, Some(&file), env)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.index_ttl, Duration::from_secs(6));
        assert_eq!(config.negative_ttl, Duration::from_secs(7));
        assert_eq!(config.upstream, "http://file.example.com/index/");
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.hot_cache_bytes, 256 << 20);
    }

    #[test]
    fn wrong_values_name_key_and_source() {
        let env = env_from(&[("CRATE_MIRROR_INDEX_TTL", "soon")]);
        let flags = [("upstream", "http://u.example.com/index".to_string())];
        let err = RawSettings::from_layers(&flags, None, env)
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`index-ttl`"), "{err}");
        assert!(err.contains("CRATE_MIRROR_INDEX_TTL"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn upstream_is_required_and_normalised() {
        let build = |flags: &[(&'static str, String)]| {
            RawSettings::from_layers(flags, None, |_| None)
                .unwrap()
                .build()
        };
        let err = build(&[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "`upstream` is required: pass --upstream URL, set CRATE_MIRROR_UPSTREAM, or put it in the config file"
        );
        assert!(build(&[("upstream", "ftp://x.example.com/".to_string())]).is_err());
        let config = build(&[("upstream", "http://x.example.com/index".to_string())]).unwrap();
        assert_eq!(config.upstream, "http://x.example.com/index/");
    }

    #[test]
    fn the_config_file_may_be_named_by_the_environment() {
        let (_dir, file) = config_file("upstream = \"http://file.example.com/\"\n");
        let env = env_from(&[("CRATE_MIRROR_CONFIG", file.to_str().unwrap())]);
        let config = RawSettings::from_layers(&[], None, env)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(config.upstream, "http://file.example.com/");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let (_dir, file) = config_file("upstreem = \"http://x.example.com/\"\n");
        let err = RawSettings::from_layers(&[], Some(&file), |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`upstreem`") && err.contains("closest: `upstream`"),
            "{err}"
        );
    }

    #[test]
    fn storage_settings() {
        let build = |flags: &[(&'static str, &str)], env: &[(&str, &str)]| {
            let mut all = vec![("upstream", "http://u.example.com/".to_string())];
            all.extend(flags.iter().map(|(k, v)| (*k, v.to_string())));
            RawSettings::from_layers(&all, None, env_from(env))
                .unwrap()
                .build()
        };
        assert_eq!(
            build(&[("max-storage", "1GiB")], &[]).unwrap().storage,
            StorageConfig::Local {
                max_bytes: Some(1 << 30)
            }
        );
        let s3 = build(
            &[
                ("storage", "s3://my-bucket/some/prefix/"),
                ("s3-redirect", "true"),
            ],
            &[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:3900"),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "GK1"),
                ("AWS_REGION", "garage"),
            ],
        )
        .unwrap()
        .storage;
        let StorageConfig::S3(s3) = s3 else {
            panic!("not s3")
        };
        assert_eq!(s3.bucket, "my-bucket");
        assert_eq!(s3.prefix, "some/prefix");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(s3.allow_http && s3.redirect);
        assert_eq!(s3.access_key_id.as_deref(), Some("GK1"));
        assert_eq!(s3.region, "garage");
        assert!(build(&[("storage", "s3://B")], &[]).is_err());
        assert!(build(&[("storage", "ftp://b")], &[]).is_err());
        assert!(build(&[("storage", "s3://bucket"), ("max-storage", "1GiB")], &[]).is_err());
        assert!(build(&[("s3-redirect", "true")], &[]).is_err());
    }
}
