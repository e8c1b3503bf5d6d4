//! Reading a bundle and checking all of it before anything is used: the
//! manifest first; then every entry against its size and sha256 in the
//! manifest (entries it does not list are refused); then every `.crate`
//! against the `cksum` its index file gives. Index files are kept in memory
//! (they are small), `.crate` files staged on disk for the store to take.
//! Blocking: run off async threads.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::{index_path, CrateEntry, Manifest, MANIFEST_PATH};
use super::BundleError;
use crate::index::lines::{find_version, validate_index};
use crate::names::{CrateName, CrateVersion};
use crate::storage::crate_key;

/// The largest manifest read (a million crates would be about 200 MB; a
/// bundle that large is not what this format is for).
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// The largest index file accepted (as from the upstream).
const MAX_INDEX_BYTES: u64 = 32 << 20;

/// A bundle whose every byte was checked.
pub struct VerifiedBundle {
    pub manifest: Manifest,
    /// Index file bodies by crate key (the lowercased name).
    pub index: BTreeMap<String, Vec<u8>>,
    /// Each `.crate` and where it is staged.
    pub crates: Vec<(CrateEntry, PathBuf)>,
}

/// What an entry of the tar is, by its path.
enum Kind {
    Index(String),
    Crate,
}

/// Checks `manifest`'s own consistency: every path one this format writes,
/// every crate listed under its key with its cksum as its sha256.
fn check_manifest(manifest: &Manifest) -> Result<BTreeMap<String, Kind>, BundleError> {
    let bad = |reason: String| BundleError::Manifest(format!("manifest: {reason}"));
    let mut kinds = BTreeMap::new();
    let crate_paths: BTreeSet<&str> = manifest.crates.iter().map(|c| c.path.as_str()).collect();
    for path in manifest.files.keys() {
        let kind = if let Some(rest) = path.strip_prefix("index/") {
            let key = rest.rsplit('/').next().unwrap_or_default();
            let name = CrateName::parse(key).map_err(|_| bad(format!("bad path {path}")))?;
            if index_path(name.key()) != *path {
                return Err(bad(format!("bad path {path}")));
            }
            Kind::Index(name.key().to_string())
        } else if crate_paths.contains(path.as_str()) {
            Kind::Crate
        } else {
            return Err(bad(format!(
                "{path} is neither an index file nor a listed crate"
            )));
        };
        kinds.insert(path.clone(), kind);
    }
    for entry in &manifest.crates {
        let name = CrateName::parse(&entry.name)
            .map_err(|_| bad(format!("bad crate name {:?}", entry.name)))?;
        CrateVersion::parse(&entry.vers)
            .map_err(|_| bad(format!("bad version {:?} of {}", entry.vers, entry.name)))?;
        if entry.path != crate_key(name.key(), &entry.vers) {
            return Err(bad(format!(
                "{} is not where {} {} goes",
                entry.path, entry.name, entry.vers
            )));
        }
        match manifest.files.get(&entry.path) {
            Some(file) if file.sha256 == entry.cksum => {}
            _ => return Err(bad(format!("{} is not listed with its cksum", entry.path))),
        }
    }
    Ok(kinds)
}

/// Reads `bundle`, staging `.crate` files in `staging` (which must exist),
/// and checks everything; `progress` is told the bytes read so far.
pub fn read_and_verify(
    bundle: &Path,
    staging: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifiedBundle, BundleError> {
    let shown = bundle.display().to_string();
    let file = File::open(bundle).map_err(|source| BundleError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let truncated = |after: &str, err: std::io::Error| BundleError::Truncated {
        after: after.to_string(),
        reason: err.to_string(),
    };
    let mut entries = archive
        .entries()
        .map_err(|e| BundleError::NotABundle(format!("{shown} ({e})")))?;

    // The manifest, first.
    let mut first = match entries.next() {
        Some(Ok(entry)) => entry,
        _ => return Err(BundleError::NotABundle(shown)),
    };
    if first.path().ok().as_deref() != Some(Path::new(MANIFEST_PATH)) {
        return Err(BundleError::NotABundle(shown));
    }
    let mut text = Vec::new();
    (&mut first)
        .take(MAX_MANIFEST_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| truncated(MANIFEST_PATH, e))?;
    drop(first);
    let manifest = Manifest::from_bytes(&text).map_err(BundleError::Manifest)?;
    let kinds = check_manifest(&manifest)?;

    let mut index = BTreeMap::new();
    let mut staged = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut last = MANIFEST_PATH.to_string();
    let mut read_bytes = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| truncated(&last, e))?;
        let path = entry
            .path()
            .map_err(|e| truncated(&last, e))?
            .to_string_lossy()
            .into_owned();
        let (Some(listed), Some(kind)) = (manifest.files.get(&path), kinds.get(&path)) else {
            return Err(BundleError::Unlisted(path));
        };
        let damaged = |reason: String| BundleError::Damaged {
            entry: path.clone(),
            reason,
        };
        if !seen.insert(path.clone()) {
            return Err(damaged("it appears twice".into()));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(damaged("not a regular file".into()));
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = Vec::new();
        let mut out = match kind {
            Kind::Crate => {
                let target = staging.join(format!("{}.crate", staged.len()));
                let file = File::create(&target).map_err(|source| BundleError::Io {
                    path: target.display().to_string(),
                    source,
                })?;
                staged.insert(path.clone(), target);
                Some(std::io::BufWriter::new(file))
            }
            Kind::Index(_) => None,
        };
        let limit = match kind {
            Kind::Crate => listed.size,
            Kind::Index(_) => listed.size.min(MAX_INDEX_BYTES),
        };
        let mut buffer = vec![0u8; 64 * 1024];
        let mut reader = (&mut entry).take(limit + 1);
        loop {
            let n = reader.read(&mut buffer).map_err(|e| truncated(&last, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            size += n as u64;
            match out.as_mut() {
                Some(file) => file
                    .write_all(&buffer[..n])
                    .map_err(|source| BundleError::Io {
                        path: path.clone(),
                        source,
                    })?,
                None => body.extend_from_slice(&buffer[..n]),
            }
            read_bytes += n as u64;
            progress(read_bytes);
        }
        if let Some(mut file) = out {
            file.flush().map_err(|source| BundleError::Io {
                path: path.clone(),
                source,
            })?;
        }
        if size != listed.size {
            return Err(damaged(format!(
                "{size} bytes, the manifest says {}",
                listed.size
            )));
        }
        let sha256 = hex::encode(hasher.finalize());
        if sha256 != listed.sha256 {
            return Err(damaged(format!(
                "sha256 {sha256}, the manifest says {}",
                listed.sha256
            )));
        }
        if let Kind::Index(key) = kind {
            validate_index(&body, key)
                .map_err(|reason| damaged(format!("not an index file: {reason}")))?;
            index.insert(key.clone(), body);
        }
        last = path;
    }
    if let Some(missing) = manifest.files.keys().find(|path| !seen.contains(*path)) {
        return Err(BundleError::Missing(missing.clone()));
    }

    // Every crate against its index line: a bundle must never bring a file
    // its index does not vouch for.
    let mut crates = Vec::new();
    for entry in &manifest.crates {
        let damaged = |reason: String| BundleError::Damaged {
            entry: entry.path.clone(),
            reason,
        };
        let key = entry.name.to_ascii_lowercase();
        let body = index
            .get(&key)
            .ok_or_else(|| damaged("its index file is not in the bundle".into()))?;
        let record = find_version(body, &entry.vers)
            .ok_or_else(|| damaged(format!("the index file lists no version {}", entry.vers)))?;
        if record.cksum != entry.cksum {
            return Err(damaged(format!(
                "the index cksum is {}, the file's sha256 is {}",
                record.cksum, entry.cksum
            )));
        }
        let path = staged
            .remove(&entry.path)
            .ok_or_else(|| BundleError::Missing(entry.path.clone()))?;
        crates.push((entry.clone(), path));
    }
    Ok(VerifiedBundle {
        manifest,
        index,
        crates,
    })
}
