//! The mirror's settings, merged from four layers: flag > environment
//! (`CRATE_MIRROR_<KEY>`) > config file (TOML) > default.
//!
//! Every layer is read as text first and parsed once, here, so that a wrong value
//! always produces the same one-line error naming the key and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{parse_token_hash, TokenSet};
use crate::prefetch::PrefetchPolicy;
use crate::proxies::TrustedProxies;

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => write!(f, "command line"),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
        }
    }
}

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
        "`{0}` is required: pass --{0} URL, set CRATE_MIRROR_{1}, or put it in the config file"
    )]
    Missing(&'static str, String),
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("unknown key `{key}` in config file {path}")]
    UnknownKey { key: String, path: PathBuf },
}

/// Every setting: its key (flag name and TOML key), its default and its meaning.
/// The README's settings table is written from this list.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("listen", "127.0.0.1:8080", "address and port to listen on"),
    (
        "upstream",
        "(required)",
        "sparse index base URL of the registry to cache",
    ),
    (
        "data-dir",
        "./data",
        "where sled, crate files and temporary files live",
    ),
    (
        "public-url",
        "(from Host)",
        "how clients reach the mirror; used in config.json",
    ),
    (
        "index-ttl",
        "60",
        "seconds an index file is served without asking the upstream",
    ),
    (
        "index-max-stale",
        "600",
        "seconds past index-ttl an index file is still served at once while it is refreshed in the background (0: clients wait)",
    ),
    (
        "negative-ttl",
        "30",
        "seconds a missing crate (404/410/451) is remembered",
    ),
    (
        "hot-cache-size",
        "256MiB",
        "bytes of index files kept in memory",
    ),
    (
        "crate-cache-size",
        "64MiB",
        "bytes of the most requested .crate files kept in memory (0: none)",
    ),
    (
        "upstream-timeout",
        "30",
        "seconds for an index fetch; also the idle-read timeout of downloads",
    ),
    ("connect-timeout", "5", "seconds to connect to the upstream"),
    ("log-format", "text", "log lines as `text` or `json`"),
    ("prefetch", "on", "fetch the index files of dependencies before cargo asks (`on`/`off`)"),
    ("prefetch-depth", "16", "dependency steps from a client's request that are prefetched"),
    ("prefetch-concurrency", "32", "prefetch requests at a time (kept below upstream-concurrency)"),
    ("prefetch-budget", "1200", "prefetch requests per minute at most"),
    ("prefetch-dev-dependencies", "false", "only `false`: cargo never resolves dependencies' dev-dependencies"),
    ("tls-cert", "(none: plain HTTP)", "PEM certificate chain; with tls-key, serve HTTPS with HTTP/2"),
    ("tls-key", "(none)", "PEM private key for tls-cert"),
    ("auth-tokens", "(none: public)", "comma-separated token hashes (`sha256:HEX`, from `crate-mirror token`); any makes the mirror private"),
    ("metrics-tokens", "(none: open)", "token hashes that /metrics and /api/stats require (in private mode a client token works too)"),
    ("trusted-proxies", "(none)", "addresses or CIDR blocks whose Forwarded / X-Forwarded-* headers are believed"),
    ("revalidate-interval", "10", "seconds between forced index revalidations of one crate (a download naming a version the cached file lacks)"),
    ("upstream-redirect-hosts", "(none)", "extra hosts upstream redirects may lead to, besides the index and `dl` hosts"),
    ("workers", "(one per CPU)", "threads that serve HTTP, each with its own connections"),
    ("max-connections", "4096", "concurrent client connections per worker"),
    ("upstream-concurrency", "64", "concurrent requests to the upstream"),
    ("shutdown-timeout", "30", "seconds in-flight requests get to finish after SIGTERM"),
    (
        "git-index",
        "off",
        "`on` serves a git index at /git/index (needs git and public-url)",
    ),
    (
        "git-rebuild-delay",
        "2",
        "seconds after index files change before the git index is rebuilt",
    ),
    (
        "storage",
        "local",
        "`local` (under the data dir) or `s3://BUCKET[/PREFIX]`",
    ),
    (
        "max-storage",
        "(unbounded)",
        "local storage quota, e.g. `50GiB`; least recently used crates are evicted",
    ),
    (
        "s3-redirect",
        "false",
        "answer S3 hits with a redirect to a presigned URL",
    ),
    (
        "aws-access-key-id",
        "(none)",
        "S3 access key (env `AWS_ACCESS_KEY_ID`)",
    ),
    (
        "aws-secret-access-key",
        "(none)",
        "S3 secret key (env `AWS_SECRET_ACCESS_KEY`)",
    ),
    ("aws-region", "us-east-1", "S3 region (env `AWS_REGION`)"),
    (
        "aws-endpoint-url",
        "(AWS)",
        "S3-compatible endpoint (env `AWS_ENDPOINT_URL`)",
    ),
    (
        "aws-allow-http",
        "false",
        "allow a plain-http endpoint (env `AWS_ALLOW_HTTP`)",
    ),
    (
        "s3-instance-credentials",
        "false",
        "take S3 credentials from the cloud instance's metadata service when no keys are set",
    ),
];

/// Validated settings for `serve` and the maintenance commands.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Base URL of the upstream sparse index, always ending in `/`.
    pub upstream: String,
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
    /// At most one forced revalidation of a crate's index file per this.
    pub revalidate_interval: Duration,
    /// Hosts besides the upstream's own that its redirects may lead to.
    pub upstream_redirect_hosts: Vec<String>,
    /// HTTP worker threads; `None`: one per CPU.
    pub workers: Option<usize>,
    pub max_connections: usize,
    pub upstream_concurrency: usize,
    pub shutdown_timeout: Duration,
    /// Certificate chain and key files, when serving HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `None` when prefetch is off.
    pub prefetch: Option<PrefetchPolicy>,
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

/// Raw values as text, keyed by setting name, each with its source.
#[derive(Debug, Default, Clone)]
pub struct RawSettings {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl RawSettings {
    /// Sets `key` unless a higher layer already did.
    fn offer(&mut self, key: &'static str, value: String, source: Source) {
        self.values.entry(key).or_insert((value, source));
    }

    /// Command-line flags: the highest layer. `flags` holds only flags that were given.
    pub fn from_layers(
        flags: &[(&'static str, Option<String>)],
        env: impl Fn(&str) -> Option<String>,
        config_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let mut raw = RawSettings::default();
        for (key, value) in flags {
            if let Some(value) = value {
                raw.offer(key, value.clone(), Source::Flag);
            }
        }
        for (key, _, _) in SETTINGS {
            let var = env_var_name(key);
            if let Some(value) = env(&var) {
                raw.offer(key, value, Source::Env(var));
            }
        }
        if let Some(path) = config_file {
            raw.merge_file(path)?;
        }
        Ok(raw)
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.message().to_string()))?;
        for (key, value) in table {
            let Some((known, _, _)) = SETTINGS
                .iter()
                .find(|(k, _, _)| *k == key.replace('_', "-"))
            else {
                return Err(ConfigError::UnknownKey {
                    key,
                    path: path.to_path_buf(),
                });
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(file_err(format!(
                        "`{key}` must be a string or a number, not {}",
                        other.type_str()
                    )))
                }
            };
            self.offer(known, text, Source::File(path.to_path_buf()));
        }
        Ok(())
    }

    fn get(&self, key: &'static str) -> Option<&(String, Source)> {
        self.values.get(key)
    }

    /// Parses `key` with `parse`, falling back to `default` (which must parse).
    fn parse<T>(
        &self,
        key: &'static str,
        default: Option<&str>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            Some((value, source)) => {
                parse(value)
                    .map(Some)
                    .map_err(|reason| ConfigError::Invalid {
                        key,
                        value: value.clone(),
                        origin: source.clone(),
                        reason,
                    })
            }
            None => {
                Ok(default
                    .map(|d| parse(d).unwrap_or_else(|e| panic!("bad default for {key}: {e}"))))
            }
        }
    }

    fn required<T>(
        &self,
        key: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.parse(key, Some(default), parse)
            .map(|v| v.unwrap_or_else(|| unreachable!("defaults always parse")))
    }

    /// Builds the validated configuration.
    pub fn build(&self) -> Result<Config, ConfigError> {
        let upstream = self
            .parse("upstream", None, parse_base_url)?
            .ok_or_else(|| ConfigError::Missing("upstream", env_var_name("upstream")))?;
        let public_url = self
            .parse("public-url", None, parse_base_url)?
            .map(|url| url.trim_end_matches('/').to_string());
        let git_index = self.required("git-index", "off", parse_bool)?;
        if git_index && public_url.is_none() {
            return Err(self.invalid(
                "git-index",
                "the git index needs --public-url: its config.json is fixed in the repository, not taken from each request's Host",
            ));
        }
        let auth_tokens = self.required("auth-tokens", "", parse_token_hashes)?;
        if !auth_tokens.is_empty() && public_url.is_none() {
            return Err(self.invalid(
                "auth-tokens",
                "a private mirror needs --public-url: config.json tells cargo where to send its token, and that must not come from a request's Host header",
            ));
        }
        Ok(Config {
            listen: self.required("listen", "127.0.0.1:8080", |v| {
                v.parse().map_err(|_| "expected ADDRESS:PORT".to_string())
            })?,
            upstream,
            data_dir: self.data_dir()?,
            public_url,
            index_ttl: self.required("index-ttl", "60", parse_seconds)?,
            index_max_stale: self.required("index-max-stale", "600", parse_seconds)?,
            negative_ttl: self.required("negative-ttl", "30", parse_seconds)?,
            hot_cache_bytes: self.required("hot-cache-size", "256MiB", parse_size)?,
            crate_cache_bytes: self.required("crate-cache-size", "64MiB", parse_size)?,
            upstream_timeout: self.required("upstream-timeout", "30", parse_positive_seconds)?,
            connect_timeout: self.required("connect-timeout", "5", parse_positive_seconds)?,
            log_format: self.required("log-format", "text", |v| match v {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected `text` or `json`".to_string()),
            })?,
            storage: self.storage()?,
            git_index,
            git_rebuild_delay: self.required("git-rebuild-delay", "2", parse_seconds)?,
            auth_tokens,
            metrics_tokens: self.required("metrics-tokens", "", parse_token_hashes)?,
            trusted_proxies: self.required("trusted-proxies", "", TrustedProxies::parse)?,
            revalidate_interval: self.required("revalidate-interval", "10", parse_seconds)?,
            upstream_redirect_hosts: self.required("upstream-redirect-hosts", "", parse_hosts)?,
            workers: self.parse("workers", None, parse_count)?,
            max_connections: self.required("max-connections", "4096", parse_count)?,
            upstream_concurrency: self.required("upstream-concurrency", "64", parse_count)?,
            shutdown_timeout: self.required("shutdown-timeout", "30", parse_seconds)?,
            tls: self.tls()?,
            prefetch: self.prefetch()?,
        })
    }

    fn prefetch(&self) -> Result<Option<PrefetchPolicy>, ConfigError> {
        if !self.required("prefetch", "on", parse_bool)? {
            return Ok(None);
        }
        let count =
            |v: &str| parse_count(v).and_then(|n| u32::try_from(n).map_err(|e| e.to_string()));
        // Still a known key so that existing configurations keep working, but
        // cargo never resolves a dependency's dev-dependencies: following them
        // could only waste upstream requests.
        let no_dev = |v: &str| match parse_bool(v)? {
            false => Ok(()),
            true => Err("cargo never asks for dependencies' dev-dependencies".to_string()),
        };
        self.required("prefetch-dev-dependencies", "false", no_dev)?;
        let upstream_concurrency = self.required("upstream-concurrency", "64", parse_count)?;
        Ok(Some(PrefetchPolicy {
            depth: self.required("prefetch-depth", "16", count)?,
            // Below the upstream's limit, so a client always finds a free slot.
            concurrency: self
                .required("prefetch-concurrency", "32", parse_count)?
                .min(upstream_concurrency.saturating_sub(1).max(1)),
            budget_per_minute: self.required("prefetch-budget", "1200", count)?,
        }))
    }

    fn tls(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        let path = |v: &str| Ok::<_, String>(PathBuf::from(v));
        let cert = self.parse("tls-cert", None, path)?;
        let key = self.parse("tls-key", None, path)?;
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.invalid("tls-cert", "needs tls-key too")),
            (None, Some(_)) => Err(self.invalid("tls-key", "needs tls-cert too")),
        }
    }

    /// The data dir alone, for commands that need no upstream.
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        self.required("data-dir", "./data", |v| {
            if v.is_empty() {
                Err("must not be empty".to_string())
            } else {
                Ok(PathBuf::from(v))
            }
        })
    }

    /// The storage settings alone, for commands that need no upstream.
    pub fn storage(&self) -> Result<StorageConfig, ConfigError> {
        let max_bytes = self.parse("max-storage", None, parse_size)?;
        let redirect = self.required("s3-redirect", "false", parse_bool)?;
        let location = self.required("storage", "local", |v| {
            if v == "local" {
                return Ok(None);
            }
            let rest = v
                .strip_prefix("s3://")
                .ok_or_else(|| "expected `local` or `s3://BUCKET[/PREFIX]`".to_string())?;
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(format!("invalid bucket name {bucket:?}"));
            }
            Ok(Some((
                bucket.to_string(),
                prefix.trim_matches('/').to_string(),
            )))
        })?;
        let Some((bucket, prefix)) = location else {
            if redirect {
                return Err(self.invalid("s3-redirect", "needs --storage s3://..."));
            }
            return Ok(StorageConfig::Local { max_bytes });
        };
        if max_bytes.is_some() {
            return Err(self.invalid("max-storage", "applies to local storage only"));
        }
        let text = |key: &'static str| self.get(key).map(|(value, _)| value.clone());
        Ok(StorageConfig::S3(S3Config {
            bucket,
            prefix,
            access_key_id: text("aws-access-key-id"),
            secret_access_key: text("aws-secret-access-key"),
            region: self.required("aws-region", "us-east-1", |v| Ok(v.to_string()))?,
            endpoint: self.parse("aws-endpoint-url", None, |v| {
                parse_base_url(v).map(|url| url.trim_end_matches('/').to_string())
            })?,
            allow_http: self.required("aws-allow-http", "false", parse_bool)?,
            redirect,
            instance_credentials: self.required("s3-instance-credentials", "false", parse_bool)?,
        }))
    }

    /// An error for a value that parsed but does not fit the other settings.
    fn invalid(&self, key: &'static str, reason: &str) -> ConfigError {
        let (value, origin) = self
            .get(key)
            .cloned()
            .unwrap_or_else(|| (String::new(), Source::Flag));
        ConfigError::Invalid {
            key,
            value,
            origin,
            reason: reason.to_string(),
        }
    }
}

fn parse_token_hashes(value: &str) -> Result<TokenSet, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(parse_token_hash)
        .collect::<Result<Vec<_>, _>>()
        .map(TokenSet::new)
}

/// `a.example.com, b.example.com:8443` → lowercase host names (with a port when given).
fn parse_hosts(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|host| {
            let url = reqwest::Url::parse(&format!("http://{host}/"))
                .map_err(|_| format!("{host:?} is not a host name"))?;
            match url.host_str() {
                Some(h) if url.path() == "/" && url.username().is_empty() => Ok(match url.port() {
                    Some(port) => format!("{h}:{port}"),
                    None => h.to_string(),
                }),
                _ => Err(format!("{host:?} is not a host name")),
            }
        })
        .collect()
}

fn parse_count(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive whole number".to_string()),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

/// `index-ttl` → `CRATE_MIRROR_INDEX_TTL`; the S3 settings use the standard
/// AWS variables (`aws-region` → `AWS_REGION`) that every S3 tool reads.
pub fn env_var_name(key: &str) -> String {
    let upper = key.replace('-', "_").to_ascii_uppercase();
    if key.starts_with("aws-") {
        upper
    } else {
        format!("CRATE_MIRROR_{upper}")
    }
}

fn parse_base_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("expected an http:// or https:// URL".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".to_string());
    }
    let mut text = url.to_string();
    if !text.ends_with('/') {
        text.push('/');
    }
    Ok(text)
}

fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| "expected a whole number of seconds".to_string())
}

fn parse_positive_seconds(value: &str) -> Result<Duration, String> {
    match parse_seconds(value)? {
        d if d.is_zero() => Err("must be at least 1 second".to_string()),
        d => Ok(d),
    }
}

/// Parses `1048576`, `512KiB`, `256MiB`, `2GiB` (also `KB`/`MB`/`GB`, decimal).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| "expected a size like 256MiB".to_string())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| "too large".to_string())
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

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirror.toml");
        std::fs::write(
            &file,
            "upstream = \"http://file.example.com/index/\"\nindex-ttl = 5\nnegative_ttl = 7\ndata-dir = \"/from/file\"\n",
        )
        .unwrap();
        let env = env_from(&[
            ("CRATE_MIRROR_INDEX_TTL", "6"),
            ("CRATE_MIRROR_DATA_DIR", "/from/env"),
        ]);
        let flags = [
            ("data-dir", Some("/from/flag".to_string())),
            ("listen", None),
        ];
        let config = RawSettings::from_layers(&flags, env, Some(&file))
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
        let flags = [("upstream", Some("http://u.example.com/index".to_string()))];
        let err = RawSettings::from_layers(&flags, env, None)
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
        let err = RawSettings::from_layers(&[], |_| None, None)
            .unwrap()
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Missing("upstream", _)));
        let flags = [("upstream", Some("ftp://x.example.com/".to_string()))];
        assert!(RawSettings::from_layers(&flags, |_| None, None)
            .unwrap()
            .build()
            .is_err());
        let flags = [("upstream", Some("http://x.example.com/index".to_string()))];
        let config = RawSettings::from_layers(&flags, |_| None, None)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(config.upstream, "http://x.example.com/index/");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mirror.toml");
        std::fs::write(&file, "upstreem = \"http://x.example.com/\"\n").unwrap();
        let err = RawSettings::from_layers(&[], |_| None, Some(&file)).unwrap_err();
        assert!(err.to_string().contains("upstreem"));
    }

    #[test]
    fn storage_settings() {
        let build = |flags: &[(&'static str, &str)], env: &[(&str, &str)]| {
            let mut all: Vec<(&'static str, Option<String>)> =
                vec![("upstream", Some("http://u.example.com/".to_string()))];
            all.extend(flags.iter().map(|(k, v)| (*k, Some(v.to_string()))));
            RawSettings::from_layers(&all, env_from(env), None)
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

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("50GiB").unwrap(), 50 << 30);
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1XB").is_err());
    }
}
