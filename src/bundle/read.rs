//! Reading a bundle and checking all of it before anything is used: the
//! manifest first, and against the limits (`ImportLimits`: no crate, no
//! index file and no bundle larger than allowed, so a small file that
//! decompresses hugely is refused before it is read); then every entry
//! against its size and sha256 in the manifest as it streams past (entries
//! it does not list are refused, and none is read past its listed size);
//! then every `.crate` against the `cksum` its index file gives.
//!
//! Nothing of a bundle is held in memory but the manifest: `.crate` files
//! and index files are staged on disk for the import to take, index files
//! checked a line at a time on the way (`index_lines::LineCheck`).
//! Blocking: run off async threads.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::index_lines::LineCheck;
use super::manifest::{index_path, CrateEntry, Manifest, MANIFEST_PATH};
use super::{human_bytes, BundleError};
use crate::names::{CrateName, CrateVersion};
use crate::storage::crate_key;

/// The largest manifest read (a million crates would be about 200 MB; a
/// bundle that large is not what this format is for).
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// The largest index file accepted: the mirror's limit for index files from
/// the upstream, and what its index store holds.
pub const MAX_INDEX_BYTES: u64 = 32 << 20;
/// The longest entry path (a GNU long-name entry) read: crate names and
/// versions are bounded, so real paths are far shorter.
const MAX_PATH_BYTES: u64 = 4096;

/// How much a bundle may make an import read and stage: settings
/// `import-max-crate-size` and `import-max-bundle-size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// The largest `.crate` file.
    pub max_crate_bytes: u64,
    /// The most decompressed bytes of one bundle: the manifest and every
    /// file it lists.
    pub max_bundle_bytes: u64,
}

/// A bundle whose every byte was checked.
pub struct VerifiedBundle {
    pub manifest: Manifest,
    /// Each index file, by crate key (the lowercased name), and where it is
    /// staged.
    pub index: BTreeMap<String, PathBuf>,
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

/// Checks what the manifest says the bundle holds against `limits`, before
/// a byte of it is staged: every file, and all of it with the manifest.
fn check_sizes(
    manifest: &Manifest,
    manifest_bytes: u64,
    kinds: &BTreeMap<String, Kind>,
    limits: &ImportLimits,
) -> Result<(), BundleError> {
    let mut total = manifest_bytes;
    for (path, file) in &manifest.files {
        let limit = match kinds.get(path) {
            Some(Kind::Crate) if file.size > limits.max_crate_bytes => Some(format!(
                "more than import-max-crate-size allows ({})",
                human_bytes(limits.max_crate_bytes)
            )),
            Some(Kind::Index(_)) if file.size > MAX_INDEX_BYTES => Some(format!(
                "more than an index file may be ({})",
                human_bytes(MAX_INDEX_BYTES)
            )),
            _ => None,
        };
        if let Some(limit) = limit {
            return Err(BundleError::TooLarge {
                entry: path.clone(),
                size: human_bytes(file.size),
                limit,
            });
        }
        total = total.saturating_add(file.size);
    }
    if total > limits.max_bundle_bytes {
        return Err(BundleError::BundleTooLarge {
            size: human_bytes(total),
            limit: human_bytes(limits.max_bundle_bytes),
        });
    }
    Ok(())
}

/// The entries of a bundle with their paths. The tar is read raw, so that
/// the tar reader never reads an extension entry (a GNU long name, a PAX
/// header) into memory whatever its size: a long name, which `export` writes
/// for long paths, is read here, bounded; any other extension is refused
/// with the entry it describes, as not a regular file.
struct Named<'a, R: Read> {
    entries: tar::Entries<'a, R>,
    /// The entry before (for errors): where a cut-short bundle stops.
    last: String,
}

impl<'a, R: Read> Named<'a, R> {
    fn truncated(&self, err: std::io::Error) -> BundleError {
        BundleError::Truncated {
            after: self.last.clone(),
            reason: err.to_string(),
        }
    }

    fn next(&mut self) -> Option<Result<(String, tar::Entry<'a, R>), BundleError>> {
        let mut long_name: Option<String> = None;
        loop {
            let mut entry = match self.entries.next()? {
                Ok(entry) => entry,
                Err(err) => return Some(Err(self.truncated(err))),
            };
            let kind = entry.header().entry_type();
            if kind.is_gnu_longname() {
                let size = entry.header().entry_size().unwrap_or(u64::MAX);
                let damaged = |reason: &str| BundleError::Damaged {
                    entry: format!("(the long name after {})", self.last),
                    reason: reason.to_string(),
                };
                if long_name.is_some() {
                    return Some(Err(damaged("two long names for one entry")));
                }
                if size > MAX_PATH_BYTES {
                    return Some(Err(damaged("longer than any path in a bundle")));
                }
                let mut bytes = Vec::new();
                if let Err(err) = (&mut entry).take(MAX_PATH_BYTES).read_to_end(&mut bytes) {
                    return Some(Err(self.truncated(err)));
                }
                while bytes.last() == Some(&0) {
                    bytes.pop();
                }
                long_name = Some(String::from_utf8_lossy(&bytes).into_owned());
                continue;
            }
            let path = match long_name {
                Some(name) => name,
                None => match entry.path() {
                    Ok(path) => path.to_string_lossy().into_owned(),
                    Err(err) => return Some(Err(self.truncated(err))),
                },
            };
            return Some(Ok((path, entry)));
        }
    }
}

/// Reads `bundle`, staging its files in `staging` (which must exist), and
/// checks everything; `progress` is told the bytes read so far.
pub fn read_and_verify(
    bundle: &Path,
    staging: &Path,
    limits: &ImportLimits,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifiedBundle, BundleError> {
    let shown = bundle.display().to_string();
    let file = File::open(bundle).map_err(|source| BundleError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let entries = archive
        .entries()
        .map_err(|e| BundleError::NotABundle(format!("{shown} ({e})")))?
        .raw(true);
    let mut entries = Named {
        entries,
        last: MANIFEST_PATH.to_string(),
    };

    // The manifest, first.
    let (path, mut first) = match entries.next() {
        Some(Ok(named)) => named,
        _ => return Err(BundleError::NotABundle(shown)),
    };
    if path != MANIFEST_PATH || first.header().entry_type() != tar::EntryType::Regular {
        return Err(BundleError::NotABundle(shown));
    }
    let manifest_limit = MAX_MANIFEST_BYTES.min(limits.max_bundle_bytes);
    let mut text = Vec::new();
    (&mut first)
        .take(manifest_limit + 1)
        .read_to_end(&mut text)
        .map_err(|e| entries.truncated(e))?;
    drop(first);
    if text.len() as u64 > manifest_limit {
        let limit = if manifest_limit < MAX_MANIFEST_BYTES {
            "more than import-max-bundle-size allows"
        } else {
            "more than a manifest may be"
        };
        return Err(BundleError::TooLarge {
            entry: MANIFEST_PATH.to_string(),
            size: format!("over {}", human_bytes(manifest_limit)),
            limit: limit.to_string(),
        });
    }
    let manifest = Manifest::from_bytes(&text).map_err(BundleError::Manifest)?;
    let kinds = check_manifest(&manifest)?;
    check_sizes(&manifest, text.len() as u64, &kinds, limits)?;
    drop(text);

    // The versions whose cksum each index file must give: the crates'.
    let mut wanted: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for entry in &manifest.crates {
        wanted
            .entry(entry.name.to_ascii_lowercase())
            .or_default()
            .push(entry.vers.as_str());
    }
    let mut cksums: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut index = BTreeMap::new();
    let mut staged = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut read_bytes = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    while let Some(named) = entries.next() {
        let (path, mut entry) = named?;
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
        let target = staging.join(format!(
            "{}.{}",
            seen.len(),
            match kind {
                Kind::Crate => "crate",
                Kind::Index(_) => "index",
            }
        ));
        let io = |source| BundleError::Io {
            path: target.display().to_string(),
            source,
        };
        let mut out = BufWriter::new(File::create(&target).map_err(io)?);
        let mut lines = match kind {
            Kind::Index(key) => Some(LineCheck::new(
                key,
                wanted.get(key).into_iter().flatten().copied(),
            )),
            Kind::Crate => None,
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        // Never past the listed size (which the limits allowed): one byte
        // more tells a longer entry.
        let mut reader = (&mut entry).take(listed.size + 1);
        loop {
            let n = reader.read(&mut buffer).map_err(|e| entries.truncated(e))?;
            if n == 0 {
                break;
            }
            let chunk = &buffer[..n];
            size += n as u64;
            if size > listed.size {
                return Err(damaged(format!(
                    "more than the {} bytes the manifest says",
                    listed.size
                )));
            }
            hasher.update(chunk);
            out.write_all(chunk).map_err(io)?;
            if let Some(lines) = lines.as_mut() {
                lines
                    .feed(chunk)
                    .map_err(|reason| damaged(format!("not an index file: {reason}")))?;
            }
            read_bytes += n as u64;
            progress(read_bytes);
        }
        out.flush().map_err(io)?;
        drop(out);
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
        match kind {
            Kind::Index(key) => {
                let found = lines
                    .map(LineCheck::finish)
                    .transpose()
                    .map_err(|reason| damaged(format!("not an index file: {reason}")))?
                    .unwrap_or_default();
                cksums.insert(key.clone(), found);
                index.insert(key.clone(), target);
            }
            Kind::Crate => {
                staged.insert(path.clone(), target);
            }
        }
        entries.last = path;
    }
    if let Some(missing) = manifest.files.keys().find(|path| !seen.contains(*path)) {
        return Err(BundleError::Missing(missing.clone()));
    }

    // Every crate against its index line: a bundle must never bring a file
    // its index does not vouch for. The bundle lists each version once, and
    // an import stores a line only if it is the site's line already (yanked
    // aside): so this is the line that will be stored.
    let mut crates = Vec::new();
    for entry in &manifest.crates {
        let damaged = |reason: String| BundleError::Damaged {
            entry: entry.path.clone(),
            reason,
        };
        let key = entry.name.to_ascii_lowercase();
        let lines = cksums
            .get(&key)
            .ok_or_else(|| damaged("its index file is not in the bundle".into()))?;
        let cksum = lines
            .get(&entry.vers)
            .ok_or_else(|| damaged(format!("the index file lists no version {}", entry.vers)))?;
        if *cksum != entry.cksum {
            return Err(damaged(format!(
                "the index cksum is {cksum}, the file's sha256 is {}",
                entry.cksum
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
