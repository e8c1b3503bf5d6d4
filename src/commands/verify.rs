//! `crate-mirror verify`: re-hashes every stored crate against the `cksum` of
//! its index line and removes the ones that do not match.
//!
//! Index files are read from the upstream, the source of truth, whenever it
//! answers: that needs no lock, so the check runs beside a live mirror (sled
//! admits one process). Where the upstream cannot be asked (`--offline`, an
//! air-gapped site that imported a bundle) or cannot be reached, they are
//! read from the index copy the data dir holds, the one the site serves
//! from; that copy is opened only then, and cannot be while a mirror runs on
//! the data dir. Crates whose index line cannot be had either way are
//! reported as unverifiable and left alone; when that is every stored crate,
//! nothing was checked and the run fails rather than report success.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::blocking::off_async;
use crate::config::{Config, StorageConfig};
use crate::index::lines::find_version;
use crate::index::store::IndexStore;
use crate::names::CrateName;
use crate::storage::local::LocalStore;
use crate::storage::s3::S3Store;
use crate::storage::{parse_crate_key, CrateStore, StorageError};
use crate::upstream::{IndexFetch, UpstreamClient, Validators};
use crate::StartError;

/// Opens the configured store without accounting (safe beside a live mirror).
fn open_store(config: &Config) -> Result<Arc<dyn CrateStore>, StartError> {
    Ok(match &config.storage {
        StorageConfig::Local { .. } => Arc::new(LocalStore::new(&config.data_dir)),
        StorageConfig::S3(s3) => Arc::new(S3Store::new(s3)?),
    })
}

/// Verifies every stored crate, printing each bad or unverifiable one, and
/// on stderr why the run fails when nothing could be checked.
pub async fn run(config: &Config) -> Result<VerifyReport, StartError> {
    let store = open_store(config)?;
    let upstream = UpstreamClient::from_config(config, Arc::new(crate::metrics::Metrics::new()))?;
    let sources = IndexSources {
        upstream: (!config.offline).then_some(&upstream),
        local: LocalIndex::new(config.data_dir.clone()),
    };
    let report = verify_store(store.as_ref(), &sources).await?;
    for (key, why) in &report.bad {
        println!("bad {key}: {why} (removed)");
    }
    for (key, why) in &report.unverifiable {
        println!("unverifiable {key}: {why}");
    }
    if report.checked == 0 && report.unverifiable.is_empty() {
        // Not a failure (a new mirror has nothing yet), but worth a word: a
        // mistyped --data-dir looks the same.
        eprintln!(
            "verify: no crates stored (storage {}, data dir {}); nothing to check",
            config.storage,
            config.data_dir.display()
        );
    }
    if report.nothing_checked() {
        eprintln!(
            "verify: nothing could be checked: no index line for any of the {} stored files \
             (first: {})",
            report.unverifiable.len(),
            report.unverifiable[0].1
        );
    }
    Ok(report)
}

/// Crates checked at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Crates hashed against an index line (good and bad).
    pub checked: usize,
    pub good: usize,
    /// Of those checked, how many against the data dir's own index copy
    /// (the upstream could not be asked).
    pub against_local_index: usize,
    /// Keys whose bytes did not match, with what was found; all were removed.
    pub bad: Vec<(String, String)>,
    /// Keys that could not be checked, with the reason.
    pub unverifiable: Vec<(String, String)>,
}

impl VerifyReport {
    /// Crates were stored and not one of them could be checked: a run that
    /// must not pass for a clean one.
    pub fn nothing_checked(&self) -> bool {
        self.checked == 0 && !self.unverifiable.is_empty()
    }

    /// Nothing bad was found and something was checked (or nothing is stored).
    pub fn passed(&self) -> bool {
        self.bad.is_empty() && !self.nothing_checked()
    }
}

impl std::fmt::Display for VerifyReport {
    /// The summary line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checked {}, good {}, bad {} (removed), unverifiable {}",
            self.checked,
            self.good,
            self.bad.len(),
            self.unverifiable.len()
        )?;
        if self.against_local_index > 0 {
            write!(
                f,
                "; {} checked against the data dir's index",
                self.against_local_index
            )?;
        }
        Ok(())
    }
}

enum Verdict {
    Good,
    Bad(String),
    Unverifiable(String),
}

/// Where index files are read from: the upstream (`None` when offline),
/// then the data dir's copy.
pub struct IndexSources<'a> {
    pub upstream: Option<&'a UpstreamClient>,
    pub local: LocalIndex,
}

/// Which of the sources an index file came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Upstream,
    Local,
}

/// The data dir's index copy, opened the first time it is needed (never,
/// while the upstream answers: a running mirror holds its lock).
pub struct LocalIndex {
    data_dir: PathBuf,
    /// The open database, or why it cannot be read.
    opened: tokio::sync::OnceCell<Result<Option<(sled::Db, IndexStore)>, String>>,
}

impl LocalIndex {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            opened: tokio::sync::OnceCell::new(),
        }
    }

    /// The plain index file of `name`, or why there is none.
    async fn file(&self, name: &CrateName) -> Result<Bytes, String> {
        let opened = self
            .opened
            .get_or_init(|| {
                let root = self.data_dir.clone();
                off_async(move || crate::data_dir::open_index_store(&root))
            })
            .await;
        let store = match opened {
            Ok(Some((_, store))) => store.clone(),
            Ok(None) => {
                return Err(format!(
                    "the data dir {} holds no index",
                    self.data_dir.display()
                ))
            }
            Err(why) => return Err(format!("the data dir's index cannot be read: {why}")),
        };
        let key = name.key().to_string();
        match off_async(move || store.load(&key)).await {
            Ok(Some(record)) => Ok(record.body),
            Ok(None) => Err("not in the data dir's index".to_string()),
            Err(err) => Err(format!("the data dir's index: {err}")),
        }
    }
}

impl IndexSources<'_> {
    /// The plain index file of `name` and where it came from. The upstream's
    /// answer that it has no such file is the truth and not looked past;
    /// any failure to get an answer is, to the data dir's copy.
    async fn file(&self, name: &CrateName) -> Result<(Bytes, Source), String> {
        let upstream_failed = match self.upstream {
            None => "offline".to_string(),
            Some(upstream) => match upstream
                .fetch_index(&name.index_path(), &Validators::default(), "client")
                .await
            {
                Ok(IndexFetch::Modified { body, .. }) => match body.decode() {
                    Ok(decoded) => return Ok((decoded.plain, Source::Upstream)),
                    Err(err) => format!("upstream index file unreadable: {err}"),
                },
                Ok(IndexFetch::Missing { status }) => {
                    return Err(format!("upstream index answered {status}"))
                }
                Ok(IndexFetch::NotModified { .. }) => "upstream answered 304 unasked".to_string(),
                Err(err) => format!("index file unavailable: {err}"),
            },
        };
        match self.local.file(name).await {
            Ok(body) => Ok((body, Source::Local)),
            Err(why) => Err(format!("{upstream_failed}; {why}")),
        }
    }
}

pub async fn verify_store(
    store: &dyn CrateStore,
    sources: &IndexSources<'_>,
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
    let results: Vec<Vec<(String, Verdict, Source)>> = futures_util::stream::iter(by_crate)
        .map(|(name, objects)| verify_crate(store, sources, name, objects))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (key, verdict, source) in results.into_iter().flatten() {
        let checked = match verdict {
            Verdict::Good => {
                report.good += 1;
                true
            }
            Verdict::Bad(why) => {
                store.delete(&key).await?;
                report.bad.push((key, why));
                true
            }
            Verdict::Unverifiable(why) => {
                report.unverifiable.push((key, why));
                false
            }
        };
        if checked {
            report.checked += 1;
            if source == Source::Local {
                report.against_local_index += 1;
            }
        }
    }
    Ok(report)
}

async fn verify_crate(
    store: &dyn CrateStore,
    sources: &IndexSources<'_>,
    name: String,
    objects: Vec<(String, String)>,
) -> Result<Vec<(String, Verdict, Source)>, StorageError> {
    let unverifiable = |why: String| {
        objects
            .iter()
            .map(|(key, _)| {
                (
                    key.clone(),
                    Verdict::Unverifiable(why.clone()),
                    Source::Upstream,
                )
            })
            .collect()
    };
    let Ok(crate_name) = CrateName::parse(&name) else {
        return Ok(unverifiable("invalid crate name".to_string()));
    };
    let (body, source) = match sources.file(&crate_name).await {
        Ok(found) => found,
        Err(why) => return Ok(unverifiable(why)),
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
        verdicts.push((key, verdict, source));
    }
    Ok(verdicts)
}
