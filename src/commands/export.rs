//! `crate-mirror export`: a bundle of what a project (or a list of crates, or
//! everything cached) needs, for a site with no route to the upstream. It
//! reads through a mirror, so what is missing is fetched (and verified) on
//! the way: in this process from a data dir (`--data-dir` and the storage
//! settings, as `serve` has them), or over HTTP from a running mirror
//! (`--from URL`). Every `.crate` is checked against its index `cksum` again
//! before it goes into the bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::progress::{Progress, Unit};
use super::warm::{Connection, WarmError, WarmPlan};
use crate::bundle::index_lines::prune;
use crate::bundle::manifest::{index_path, CrateEntry, Manifest};
use crate::bundle::write::BundleWriter;
use crate::bundle::{human_bytes, BundleError};
use crate::config::defs::UPSTREAM;
use crate::config::{Config, ConfigError, RawSettings};
use crate::crates::CrateDownload;
use crate::index::lines::{find_version, VersionRecord};
use crate::names::{CrateName, CrateVersion};
use crate::storage::{crate_key, parse_crate_key};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Wrong arguments: exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Plan(#[from] WarmError),
    #[error("{what}: {reason}")]
    Fetch { what: String, reason: String },
    #[error("{name} {vers}: the bytes' sha256 is {got}, the index cksum is {want}")]
    Checksum {
        name: String,
        vers: String,
        got: String,
        want: String,
    },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Wrong settings for an export from a data dir: exit code 2.
    #[error(transparent)]
    Settings(ConfigError),
}

impl ExportError {
    pub fn is_usage(&self) -> bool {
        matches!(self, ExportError::Usage(_) | ExportError::Settings(_))
            || matches!(self, ExportError::Plan(e) if e.is_usage())
    }

    fn fetch(what: impl Into<String>, reason: impl ToString) -> Self {
        ExportError::Fetch {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// The configuration of an export from a data dir. Without an upstream the
/// error names export's own ways to a source, `--from` first: the settings'
/// "`upstream` is required" does not say that a running mirror will do.
pub fn data_dir_config(raw: &RawSettings) -> Result<Config, ExportError> {
    raw.build().map_err(|err| match err {
        ConfigError::Missing(about) if std::ptr::eq(about, &UPSTREAM.about) => {
            ExportError::Usage(format!(
                "export needs a source: --from URL to read from a running mirror, or \
                 --{key} URL (or {env}) to read from this data dir and fetch what it \
                 lacks; --offline exports only what the data dir holds",
                key = about.key,
                env = about.env_var(),
            ))
        }
        other => ExportError::Settings(other),
    })
}

/// What to put in the bundle.
#[derive(Debug, Default)]
pub struct ExportRequest {
    pub lockfiles: Vec<PathBuf>,
    /// `NAME` or `NAME@REQ`: the newest release matching (any, without REQ).
    pub crates: Vec<String>,
    pub all_cached: bool,
    pub prune_index: bool,
    /// An earlier bundle (or its manifest): leave out what it holds.
    pub since: Option<PathBuf>,
}

/// Where the bytes come from.
pub enum Source {
    /// A data dir opened in this process (no mirror may be serving it).
    Local(Box<AppState>),
    /// A running mirror, over HTTP.
    Remote {
        base: String,
        client: reqwest::Client,
    },
}

impl Source {
    pub fn remote(base: &str, connection: &Connection) -> Result<Self, ExportError> {
        Ok(Source::Remote {
            base: base.trim_end_matches('/').to_string(),
            client: super::warm::client(connection)?,
        })
    }

    /// The index file of `name` (plain), or `None` when there is no such crate.
    async fn index_file(&self, name: &CrateName) -> Result<Option<Bytes>, ExportError> {
        let what = format!("index file of {name}");
        match self {
            Source::Local(state) => {
                let lookup = state
                    .index
                    .get(name)
                    .await
                    .map_err(|e| ExportError::fetch(&what, e))?;
                if !lookup.entry.is_found() {
                    return Ok(None);
                }
                let plain = state
                    .index
                    .plain(&lookup.entry)
                    .await
                    .map_err(|e| ExportError::fetch(&what, e))?;
                Ok(Some(plain))
            }
            Source::Remote { base, client } => {
                let url = format!("{base}/index/{}", name.index_path());
                let response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| ExportError::fetch(&what, e))?;
                match response.status().as_u16() {
                    200 => Ok(Some(
                        response
                            .bytes()
                            .await
                            .map_err(|e| ExportError::fetch(&what, e))?,
                    )),
                    404 | 410 | 451 => Ok(None),
                    status => Err(ExportError::fetch(
                        what,
                        format!("the mirror answered {status}"),
                    )),
                }
            }
        }
    }

    /// Writes the `.crate` of `name` `version` to `dest`; its sha256 and size.
    async fn crate_file(
        &self,
        name: &CrateName,
        version: &CrateVersion,
        dest: &Path,
    ) -> Result<(String, u64), ExportError> {
        let what = format!("{name} {}", version.as_str());
        let mut body = match self {
            Source::Local(state) => match state
                .crates
                .download(name, version)
                .await
                .map_err(|e| ExportError::fetch(&what, e))?
            {
                CrateDownload::Stream { body, .. } => body,
                // S3 with redirects: the object is stored; read it directly.
                CrateDownload::Redirect(_) => {
                    state
                        .stores
                        .front()
                        .get(&crate_key(name.key(), version.as_str()))
                        .await
                        .map_err(|e| ExportError::fetch(&what, e))?
                        .ok_or_else(|| ExportError::fetch(&what, "not in storage"))?
                        .body
                }
            },
            Source::Remote { base, client } => {
                let url = format!(
                    "{base}/api/v1/crates/{}/{}/download",
                    name.as_str(),
                    version.as_str().replace('+', "%2B")
                );
                let response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| ExportError::fetch(&what, e))?;
                if !response.status().is_success() {
                    return Err(ExportError::fetch(
                        what,
                        format!("the mirror answered {}", response.status()),
                    ));
                }
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other))
                    .boxed()
            }
        };
        let io = |source| ExportError::Io {
            path: dest.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ExportError::fetch(&what, e))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// Every index file and `.crate` in a data dir.
    async fn cached(&self) -> Result<(BTreeSet<String>, BTreeSet<(String, String)>), ExportError> {
        let Source::Local(state) = self else {
            return Err(ExportError::Usage(
                "--all-cached reads a data dir: give --data-dir, not --from".into(),
            ));
        };
        let store = state.index_store().clone();
        let names = tokio::task::spawn_blocking(move || {
            store
                .headers()
                .filter_map(|entry| entry.ok().map(|(key, _)| key))
                .collect::<BTreeSet<String>>()
        })
        .await
        .map_err(|e| ExportError::fetch("the stored index", e))?;
        let crates = state
            .stores
            .front()
            .list()
            .await
            .map_err(|e| ExportError::fetch("the stored crates", e))?
            .into_iter()
            .filter_map(|object| parse_crate_key(&object.key))
            .collect();
        Ok((names, crates))
    }

    fn describe(&self) -> String {
        match self {
            Source::Local(state) => state.upstream.base().to_string(),
            Source::Remote { base, .. } => base.clone(),
        }
    }
}

/// What an export did.
#[derive(Debug)]
pub struct ExportReport {
    pub index_files: usize,
    pub crates: usize,
    /// Crates and index files left out because `--since`'s bundle has them.
    pub skipped: usize,
    pub payload_bytes: u64,
    pub bundle_bytes: u64,
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exported {} index files and {} crates ({}; bundle {})",
            self.index_files,
            self.crates,
            human_bytes(self.payload_bytes),
            human_bytes(self.bundle_bytes)
        )?;
        if self.skipped > 0 {
            write!(f, "; {} already in the earlier bundle", self.skipped)?;
        }
        Ok(())
    }
}

/// A version wanted: exactly, or the newest release matching a requirement.
enum Want {
    Exact(String),
    Newest(semver::VersionReq),
}

/// The manifest of an earlier bundle: the file itself, or a bundle holding it.
fn read_since(path: &Path) -> Result<Manifest, ExportError> {
    let io = |source| ExportError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut entries = archive.entries().map_err(io)?;
        let Some(Ok(mut first)) = entries.next() else {
            return Err(BundleError::NotABundle(path.display().to_string()).into());
        };
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut first, &mut text).map_err(io)?;
        return Manifest::from_bytes(&text).map_err(|e| BundleError::Manifest(e).into());
    }
    Manifest::from_bytes(&bytes).map_err(|e| BundleError::Manifest(e).into())
}

/// Builds the bundle at `out` from `source`.
pub async fn export(
    source: &Source,
    request: &ExportRequest,
    out: &Path,
    staging: &Path,
) -> Result<ExportReport, ExportError> {
    // What is wanted, by crate key.
    let mut wants: BTreeMap<String, (CrateName, Vec<Want>)> = BTreeMap::new();
    let mut want = |name: CrateName, want: Option<Want>| {
        let slot = wants
            .entry(name.key().to_string())
            .or_insert_with(|| (name, Vec::new()));
        slot.1.extend(want);
    };
    let mut plan = WarmPlan::default();
    for path in &request.lockfiles {
        plan.add_lockfile(path)?;
    }
    for (name, vers) in &plan.crates {
        want(parse_name(name)?, Some(Want::Exact(vers.clone())));
    }
    for spec in &request.crates {
        let (name, req) = match spec.split_once('@') {
            Some((name, req)) => (
                name,
                semver::VersionReq::parse(req)
                    .map_err(|e| ExportError::Usage(format!("--crate {spec}: {e}")))?,
            ),
            None => (spec.as_str(), semver::VersionReq::STAR),
        };
        want(parse_name(name)?, Some(Want::Newest(req)));
    }
    if request.all_cached {
        let (names, crates) = source.cached().await?;
        for name in names {
            want(parse_name(&name)?, None);
        }
        for (name, vers) in crates {
            want(parse_name(&name)?, Some(Want::Exact(vers)));
        }
    }
    if wants.is_empty() {
        return Err(ExportError::Usage(
            "nothing to export: give --lockfile, --crate or --all-cached".into(),
        ));
    }
    let since = request.since.as_deref().map(read_since).transpose()?;

    // Index files first: they say which versions exist and their cksums.
    let mut progress = Progress::new("export", wants.len() as u64, Unit::Items);
    let mut chosen: Vec<(CrateName, Bytes, BTreeMap<String, VersionRecord>)> = Vec::new();
    for (name, wanted) in wants.into_values() {
        let body = source
            .index_file(&name)
            .await?
            .ok_or_else(|| ExportError::fetch(format!("crate {name}"), "no such crate"))?;
        let mut versions = BTreeMap::new();
        for want in wanted {
            let vers = match want {
                Want::Exact(vers) => vers,
                Want::Newest(req) => crate::prefetch::choose_release(&body, &req)
                    .map(|release| release.vers)
                    .ok_or_else(|| {
                        ExportError::fetch(
                            format!("crate {name}"),
                            format!("no release matches {req}"),
                        )
                    })?,
            };
            let record = find_version(&body, &vers).ok_or_else(|| {
                ExportError::fetch(format!("{name} {vers}"), "not in its index file")
            })?;
            versions.insert(vers, record);
        }
        progress.step(1);
        chosen.push((name, body, versions));
    }
    progress.finish();

    let mut writer = BundleWriter::new(Manifest::new(
        &source.describe(),
        request.prune_index,
        since.as_ref().map(Manifest::id),
    ));
    let mut skipped = 0;
    let mut downloads = Vec::new();
    for (name, body, versions) in &chosen {
        let mut downloading = false;
        for (vers, record) in versions {
            let had = since.as_ref().is_some_and(|old| {
                old.crates
                    .iter()
                    .any(|c| c.path == crate_key(name.key(), vers) && c.cksum == record.cksum)
            });
            if had {
                skipped += 1;
            } else {
                downloading = true;
                downloads.push((name.clone(), vers.clone(), record.clone()));
            }
        }
        let path = index_path(name.key());
        let file = if request.prune_index {
            prune(body, &versions.keys().cloned().collect())
        } else {
            body.to_vec()
        };
        // A crate's index file travels with it even when the earlier bundle
        // had it: an import checks each crate against the bundle's own lines.
        let unchanged = since.as_ref().is_some_and(|old| {
            old.files
                .get(&path)
                .is_some_and(|f| f.sha256 == crate::bundle::sha256_hex(&file))
        });
        if unchanged && !downloading {
            skipped += 1;
        } else {
            writer.add_bytes(path, file);
        }
    }

    let mut progress = Progress::new("export", downloads.len() as u64, Unit::Items);
    for (number, (name, vers, record)) in downloads.iter().enumerate() {
        let version = CrateVersion::parse(vers)
            .map_err(|_| ExportError::fetch(format!("{name} {vers}"), "not a version"))?;
        let staged = staging.join(format!("{number}.crate"));
        let (sha256, size) = source.crate_file(name, &version, &staged).await?;
        if sha256 != record.cksum {
            return Err(ExportError::Checksum {
                name: name.to_string(),
                vers: vers.clone(),
                got: sha256,
                want: record.cksum.clone(),
            });
        }
        let path = crate_key(name.key(), vers);
        writer.manifest.crates.push(CrateEntry {
            name: record.name.clone(),
            vers: vers.clone(),
            cksum: record.cksum.clone(),
            path: path.clone(),
        });
        writer.add_file(path, staged, size, sha256);
        progress.step(1);
    }
    progress.finish();
    writer.manifest.crates.sort();
    let index_files = writer
        .manifest
        .files
        .keys()
        .filter(|p| p.starts_with("index/"))
        .count();
    let crates = writer.manifest.crates.len();
    let payload_bytes = writer.payload_bytes();
    let out = out.to_path_buf();
    let bundle_bytes = tokio::task::spawn_blocking(move || writer.finish(&out))
        .await
        .map_err(|e| ExportError::fetch("writing the bundle", e))??;
    Ok(ExportReport {
        index_files,
        crates,
        skipped,
        payload_bytes,
        bundle_bytes,
    })
}

fn parse_name(name: &str) -> Result<CrateName, ExportError> {
    CrateName::parse(name).map_err(|_| ExportError::Usage(format!("{name:?} is not a crate name")))
}
