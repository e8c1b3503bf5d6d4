//! `crate-mirror verify`: re-hashes every stored crate against the `cksum` of
//! its index line and removes the ones that do not match.
//!
//! Index files are read from the upstream, not from the mirror's database, so the
//! check runs beside a live mirror (sled admits one process) and against the
//! source of truth. Crates whose index line cannot be had are reported as
//! unverifiable and left alone.

use std::collections::BTreeMap;

use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::config::{Config, StorageConfig};
use crate::index::lines::find_version;
use crate::names::CrateName;
use crate::storage::local::LocalStore;
use crate::storage::s3::S3Store;
use crate::storage::{parse_crate_key, CrateStore, StorageError};
use crate::upstream::{IndexFetch, UpstreamClient, Validators};
use crate::StartError;
use std::sync::Arc;

/// Opens the configured store without accounting (safe beside a live mirror).
fn open_store(config: &Config) -> Result<Arc<dyn CrateStore>, StartError> {
    Ok(match &config.storage {
        StorageConfig::Local { .. } => Arc::new(LocalStore::new(&config.data_dir)),
        StorageConfig::S3(s3) => Arc::new(S3Store::new(s3)?),
    })
}

/// Verifies every stored crate, printing each bad or unverifiable one.
pub async fn run(config: &Config) -> Result<VerifyReport, StartError> {
    let store = open_store(config)?;
    let upstream = UpstreamClient::from_config(config, Arc::new(crate::metrics::Metrics::new()))?;
    let report = verify_store(store.as_ref(), &upstream).await?;
    for (key, why) in &report.bad {
        println!("bad {key}: {why} (removed)");
    }
    for (key, why) in &report.unverifiable {
        println!("unverifiable {key}: {why}");
    }
    Ok(report)
}

/// Crates checked at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    pub good: usize,
    /// Keys whose bytes did not match, with what was found; all were removed.
    pub bad: Vec<(String, String)>,
    /// Keys that could not be checked, with the reason.
    pub unverifiable: Vec<(String, String)>,
}

enum Verdict {
    Good,
    Bad(String),
    Unverifiable(String),
}

pub async fn verify_store(
    store: &dyn CrateStore,
    upstream: &UpstreamClient,
) -> Result<VerifyReport, StorageError> {
    // Group by crate so each index file is fetched once.
    let mut by_crate: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut report = VerifyReport::default();
    for object in store.list().await? {
        match parse_crate_key(&object.key) {
            Some((name, version)) => by_crate
                .entry(name)
                .or_default()
                .push((object.key, version)),
            None => report
                .unverifiable
                .push((object.key, "not a crate key".to_string())),
        }
    }
    let results: Vec<Vec<(String, Verdict)>> = futures_util::stream::iter(by_crate)
        .map(|(name, objects)| verify_crate(store, upstream, name, objects))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (key, verdict) in results.into_iter().flatten() {
        report.checked += 1;
        match verdict {
            Verdict::Good => report.good += 1,
            Verdict::Bad(why) => {
                store.delete(&key).await?;
                report.bad.push((key, why));
            }
            Verdict::Unverifiable(why) => report.unverifiable.push((key, why)),
        }
    }
    Ok(report)
}

async fn verify_crate(
    store: &dyn CrateStore,
    upstream: &UpstreamClient,
    name: String,
    objects: Vec<(String, String)>,
) -> Result<Vec<(String, Verdict)>, StorageError> {
    let unverifiable = |why: String| {
        objects
            .iter()
            .map(|(key, _)| (key.clone(), Verdict::Unverifiable(why.clone())))
            .collect()
    };
    let Ok(crate_name) = CrateName::parse(&name) else {
        return Ok(unverifiable("invalid crate name".to_string()));
    };
    let body = match upstream
        .fetch_index(&crate_name.index_path(), &Validators::default(), "client")
        .await
    {
        Ok(IndexFetch::Modified { body, .. }) => match body.decode() {
            Ok(decoded) => decoded.plain,
            Err(err) => return Ok(unverifiable(format!("index file unreadable: {err}"))),
        },
        Ok(IndexFetch::Missing { status }) => {
            return Ok(unverifiable(format!("upstream index answered {status}")))
        }
        Ok(IndexFetch::NotModified { .. }) => {
            return Ok(unverifiable("upstream answered 304 unasked".to_string()))
        }
        Err(err) => return Ok(unverifiable(format!("index file unavailable: {err}"))),
    };
    let mut verdicts = Vec::with_capacity(objects.len());
    for (key, version) in objects {
        let verdict = match find_version(&body, &version) {
            None => Verdict::Unverifiable(format!("version {version} not in the index")),
            Some(record) => match store.get(&key).await? {
                None => continue,
                Some(object) => {
                    let mut hasher = Sha256::new();
                    let mut stream = object.body;
                    while let Some(chunk) = stream.next().await {
                        hasher.update(&chunk?);
                    }
                    let actual = hex::encode(hasher.finalize());
                    if actual == record.cksum {
                        Verdict::Good
                    } else {
                        Verdict::Bad(format!("sha256 {actual}, index cksum {}", record.cksum))
                    }
                }
            },
        };
        verdicts.push((key, verdict));
    }
    Ok(verdicts)
}
