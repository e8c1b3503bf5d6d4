//! `crate-mirror warm`: fills a running mirror's cache from lockfiles (and crate
//! names), as a client would — over HTTP — so it works beside a live mirror and
//! against any node behind a load balancer. Index files first, then the `.crate`
//! of every locked version, with bounded concurrency and a progress line.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;

use crate::names::{CrateName, CrateVersion};

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("cannot read {path}: {reason}")]
    Lockfile { path: String, reason: String },
    #[error("invalid crate name {0:?}")]
    Name(String),
    #[error("http client: {0}")]
    Client(String),
}

/// What to warm.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WarmPlan {
    pub index_files: BTreeSet<String>,
    pub crates: BTreeSet<(String, String)>,
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

    pub fn add_crate(&mut self, name: &str) -> Result<(), WarmError> {
        CrateName::parse(name).map_err(|_| WarmError::Name(name.to_string()))?;
        self.index_files.insert(name.to_string());
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct WarmReport {
    /// (what, how the mirror answered)
    pub fetched: Vec<String>,
    pub cached: Vec<String>,
    pub failed: Vec<(String, String)>,
}

enum Outcome {
    Fetched,
    Cached,
    Failed(String),
}

/// Warms `mirror` (its base URL) with `jobs` requests at a time.
pub async fn warm(mirror: &str, plan: &WarmPlan, jobs: usize) -> Result<WarmReport, WarmError> {
    let client = reqwest::Client::builder()
        .user_agent(concat!("crate-mirror-warm/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| WarmError::Client(e.to_string()))?;
    let base = mirror.trim_end_matches('/');
    let mut targets: Vec<(String, String)> = Vec::new();
    for name in &plan.index_files {
        let Ok(parsed) = CrateName::parse(name) else {
            continue;
        };
        targets.push((
            format!("index {name}"),
            format!("{base}/index/{}", parsed.index_path()),
        ));
    }
    for (name, version) in &plan.crates {
        let encoded = version.replace('+', "%2B");
        targets.push((
            format!("crate {name} {version}"),
            format!("{base}/api/v1/crates/{name}/{encoded}/download"),
        ));
    }
    let total = targets.len();
    let mut report = WarmReport::default();
    // Index files before crates: a download needs its index line.
    let index_count = plan.index_files.len();
    let mut done = 0;
    for batch in [
        &targets[..index_count.min(total)],
        &targets[index_count.min(total)..],
    ] {
        let mut results = futures_util::stream::iter(batch.iter().cloned())
            .map(|(label, url)| {
                let client = client.clone();
                async move { (label, fetch(&client, &url).await) }
            })
            .buffer_unordered(jobs.max(1));
        while let Some((label, outcome)) = results.next().await {
            done += 1;
            progress(done, total);
            match outcome {
                Outcome::Fetched => report.fetched.push(label),
                Outcome::Cached => report.cached.push(label),
                Outcome::Failed(why) => report.failed.push((label, why)),
            }
        }
    }
    if total > 0 {
        eprintln!();
    }
    Ok(report)
}

async fn fetch(client: &reqwest::Client, url: &str) -> Outcome {
    let response = match client.get(url).send().await {
        Ok(response) => response,
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
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        if let Err(err) = chunk {
            return Outcome::Failed(err.to_string());
        }
    }
    if cache == "HIT" {
        Outcome::Cached
    } else {
        Outcome::Fetched
    }
}

fn progress(done: usize, total: usize) {
    const WIDTH: usize = 30;
    let filled = WIDTH * done / total.max(1);
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "\r[{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    );
    let _ = stderr.flush();
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
