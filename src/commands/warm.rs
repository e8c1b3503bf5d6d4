//! `crate-mirror warm`: fills a running mirror's cache from lockfiles (and crate
//! names), as a client would — over HTTP — so it works beside a live mirror and
//! against any node behind a load balancer. Index files first, then the `.crate`
//! of every locked version (and of the newest release of each crate named),
//! with bounded concurrency and progress on stderr.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::progress::{Progress, Unit};
use crate::names::{CrateName, CrateVersion};

/// Connection failures in a row after which the mirror is taken to be down.
const UNREACHABLE_AFTER: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("cannot read {path}: {reason}")]
    Lockfile { path: String, reason: String },
    #[error("{path} is a manifest, not a lockfile: run `cargo generate-lockfile` and pass the Cargo.lock beside it")]
    Manifest { path: String },
    #[error("invalid crate name {0:?}")]
    Name(String),
    #[error("nothing to warm: pass --lockfile PATH (a Cargo.lock) or --crate NAME")]
    Nothing,
    #[error("cannot read the CA certificate {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error("http client: {0}")]
    Client(String),
    #[error("the mirror at {mirror} is unreachable ({reason}); stopped after {UNREACHABLE_AFTER} failed connections in a row")]
    Unreachable { mirror: String, reason: String },
}

impl WarmError {
    /// The command was asked for something it cannot do (exit code 2, like a
    /// bad setting), rather than failing at it.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            WarmError::Nothing | WarmError::Manifest { .. } | WarmError::Name(_)
        )
    }
}

/// What to warm.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WarmPlan {
    pub index_files: BTreeSet<String>,
    pub crates: BTreeSet<(String, String)>,
    /// Crates named without a version: their newest release's `.crate` too.
    pub newest_of: BTreeSet<String>,
}

impl WarmPlan {
    /// Adds every registry package of a Cargo.lock: its index file and its version.
    pub fn add_lockfile(&mut self, path: &Path) -> Result<(), WarmError> {
        let err = |reason: String| WarmError::Lockfile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let lock: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(e.message().to_string()))?;
        // A manifest has a `[package]` table (or only dependencies); a
        // lockfile an array of `[[package]]`s.
        match lock.get("package") {
            Some(toml::Value::Array(_)) => {}
            Some(_) | None
                if !lock.contains_key("version") || lock.contains_key("dependencies") =>
            {
                return Err(WarmError::Manifest {
                    path: path.display().to_string(),
                });
            }
            _ => {}
        }
        let packages = lock
            .get("package")
            .and_then(|p| p.as_array())
            .cloned()
            .unwrap_or_default();
        for package in packages {
            let from_registry = package
                .get("source")
                .and_then(|s| s.as_str())
                .is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"));
            let name = package.get("name").and_then(|v| v.as_str());
            let version = package.get("version").and_then(|v| v.as_str());
            if let (true, Some(name), Some(version)) = (from_registry, name, version) {
                let valid = CrateName::parse(name).is_ok() && CrateVersion::parse(version).is_ok();
                if !valid {
                    return Err(err(format!("invalid package {name} {version}")));
                }
                self.index_files.insert(name.to_string());
                self.crates.insert((name.to_string(), version.to_string()));
            }
        }
        Ok(())
    }

    /// A crate by name: its index file and its newest release's `.crate`.
    pub fn add_crate(&mut self, name: &str) -> Result<(), WarmError> {
        CrateName::parse(name).map_err(|_| WarmError::Name(name.to_string()))?;
        self.index_files.insert(name.to_string());
        self.newest_of.insert(name.to_string());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.index_files.is_empty() && self.crates.is_empty()
    }
}

/// How to reach the mirror.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// A PEM file of extra CA certificates to trust (besides the system's and
    /// `SSL_CERT_FILE`'s), for a mirror with a private CA.
    pub cacert: Option<PathBuf>,
    /// Sent as `Authorization` to a private mirror.
    pub token: Option<String>,
}

#[derive(Debug, Default)]
pub struct WarmReport {
    /// (what, how the mirror answered)
    pub fetched: Vec<String>,
    pub cached: Vec<String>,
    pub failed: Vec<(String, String)>,
}

enum Outcome {
    /// Fetched from the upstream by the mirror (or cached), with the body
    /// when the caller wants it.
    Fetched(Option<bytes::Bytes>),
    Cached(Option<bytes::Bytes>),
    /// The mirror answered, but not with the file.
    Failed(String),
    /// No answer at all: the mirror may be down.
    Unreachable(String),
}

/// The HTTP client for a mirror (`export --from` uses it too).
pub(crate) fn client(connection: &Connection) -> Result<reqwest::Client, WarmError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("crate-mirror-warm/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &connection.cacert {
        let err = |reason: String| WarmError::CaCert {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no certificate in the file".to_string()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(token) = &connection.token {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(token)
            .map_err(|_| WarmError::Client("the token is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    builder
        .build()
        .map_err(|e| WarmError::Client(e.to_string()))
}

/// Warms `mirror` (its base URL) with `jobs` requests at a time.
pub async fn warm(
    mirror: &str,
    plan: &WarmPlan,
    jobs: usize,
    connection: &Connection,
) -> Result<WarmReport, WarmError> {
    if plan.is_empty() {
        return Err(WarmError::Nothing);
    }
    let client = client(connection)?;
    let base = mirror.trim_end_matches('/');
    let mut progress = Progress::new(
        "warm",
        (plan.index_files.len() + plan.crates.len()) as u64,
        Unit::Items,
    );
    let mut report = WarmReport::default();
    // Index files before crates: a download needs its index line.
    let index_targets: Vec<Target> = plan
        .index_files
        .iter()
        .filter_map(|name| {
            let parsed = CrateName::parse(name).ok()?;
            Some(Target {
                label: format!("index {name}"),
                url: format!("{base}/index/{}", parsed.index_path()),
                newest_of: plan.newest_of.contains(name).then(|| name.clone()),
            })
        })
        .collect();
    let mut crates = plan.crates.clone();
    let bodies = run(
        &client,
        mirror,
        index_targets,
        jobs,
        &mut progress,
        &mut report,
    )
    .await?;
    for (name, body) in bodies {
        match newest_release(&body) {
            Some(version) => {
                if crates.insert((name.clone(), version)) {
                    progress.total += 1;
                }
            }
            None => report
                .failed
                .push((format!("crate {name}"), "no release to fetch".to_string())),
        }
    }
    let crate_targets: Vec<Target> = crates
        .iter()
        .map(|(name, version)| Target {
            label: format!("crate {name} {version}"),
            url: format!(
                "{base}/api/v1/crates/{name}/{}/download",
                version.replace('+', "%2B")
            ),
            newest_of: None,
        })
        .collect();
    run(
        &client,
        mirror,
        crate_targets,
        jobs,
        &mut progress,
        &mut report,
    )
    .await?;
    progress.finish();
    Ok(report)
}

#[derive(Clone)]
struct Target {
    label: String,
    url: String,
    /// Keep the body: the newest release of this crate is wanted too.
    newest_of: Option<String>,
}

/// Fetches `targets`, recording each outcome; returns the bodies asked for.
/// Stops with `Unreachable` after too many connection failures in a row.
async fn run(
    client: &reqwest::Client,
    mirror: &str,
    targets: Vec<Target>,
    jobs: usize,
    progress: &mut Progress,
    report: &mut WarmReport,
) -> Result<Vec<(String, bytes::Bytes)>, WarmError> {
    let mut bodies = Vec::new();
    let mut unreachable_in_a_row = 0;
    let mut results = futures_util::stream::iter(targets)
        .map(|target| {
            let client = client.clone();
            async move {
                let outcome = fetch(&client, &target.url, target.newest_of.is_some()).await;
                (target, outcome)
            }
        })
        .buffer_unordered(jobs.max(1));
    while let Some((target, outcome)) = results.next().await {
        progress.step(1);
        let body = match outcome {
            Outcome::Unreachable(reason) => {
                unreachable_in_a_row += 1;
                if unreachable_in_a_row >= UNREACHABLE_AFTER {
                    progress.finish();
                    return Err(WarmError::Unreachable {
                        mirror: mirror.to_string(),
                        reason,
                    });
                }
                report.failed.push((target.label, reason));
                continue;
            }
            Outcome::Failed(why) => {
                unreachable_in_a_row = 0;
                report.failed.push((target.label, why));
                continue;
            }
            Outcome::Fetched(body) => {
                unreachable_in_a_row = 0;
                report.fetched.push(target.label);
                body
            }
            Outcome::Cached(body) => {
                unreachable_in_a_row = 0;
                report.cached.push(target.label);
                body
            }
        };
        if let (Some(name), Some(body)) = (target.newest_of, body) {
            bodies.push((name, body));
        }
    }
    Ok(bodies)
}

async fn fetch(client: &reqwest::Client, url: &str, keep_body: bool) -> Outcome {
    let response = match client.get(url).send().await {
        Ok(response) => response,
        Err(err) if err.is_connect() || err.is_timeout() => {
            return Outcome::Unreachable(err.to_string())
        }
        Err(err) => return Outcome::Failed(err.to_string()),
    };
    let status = response.status();
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !status.is_success() {
        return Outcome::Failed(format!("mirror answered {status}"));
    }
    // Read the whole body: a download counts only once it arrived in full.
    let mut kept = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) if keep_body => kept.extend_from_slice(&chunk),
            Ok(_) => {}
            Err(err) => return Outcome::Failed(err.to_string()),
        }
    }
    let body = keep_body.then(|| bytes::Bytes::from(kept));
    if cache == "HIT" {
        Outcome::Cached(body)
    } else {
        Outcome::Fetched(body)
    }
}

/// The newest release that a fresh resolve could pick: not yanked, not a
/// prerelease.
fn newest_release(body: &[u8]) -> Option<String> {
    crate::prefetch::choose_release(body, &semver::VersionReq::STAR).map(|release| release.vers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfiles_contribute_registry_packages_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Cargo.lock");
        std::fs::write(
            &path,
            r#"version = 4

[[package]]
name = "local-thing"
version = "0.1.0"
dependencies = ["serde"]

[[package]]
name = "serde"
version = "1.0.0"
source = "registry+https://registry.example.com/index"
checksum = "00"

[[package]]
name = "buildmeta"
version = "1.0.0+build.7"
source = "sparse+https://registry.example.com/index/"

[[package]]
name = "from-git"
version = "0.1.0"
source = "git+https://git.example.com/x#abc"
"#,
        )
        .unwrap();
        let mut plan = WarmPlan::default();
        plan.add_lockfile(&path).unwrap();
        plan.add_crate("extra").unwrap();
        assert_eq!(
            plan.index_files
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["buildmeta", "extra", "serde"]
        );
        assert_eq!(plan.crates.len(), 2);
        assert!(plan
            .crates
            .contains(&("buildmeta".into(), "1.0.0+build.7".into())));
        assert!(plan.add_crate("../x").is_err());
    }
}
