//! Writing a bundle: the manifest first, then every listed file, into a
//! gzip'd tar written beside the destination and renamed over it at the end,
//! so a bundle that exists is a whole one. Blocking: run off async threads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::manifest::{FileEntry, Manifest, MANIFEST_PATH};
use super::BundleError;

/// A bundle being put together: the manifest so far and where each file's
/// bytes are (index files in memory, `.crate` files staged on disk).
pub struct BundleWriter {
    pub manifest: Manifest,
    files: Vec<(String, Content)>,
}

enum Content {
    Bytes(Vec<u8>),
    File(PathBuf),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl BundleWriter {
    pub fn new(manifest: Manifest) -> Self {
        BundleWriter {
            manifest,
            files: Vec::new(),
        }
    }

    /// Adds a file held in memory at `path` in the tar.
    pub fn add_bytes(&mut self, path: String, bytes: Vec<u8>) {
        self.manifest.files.insert(
            path.clone(),
            FileEntry {
                size: bytes.len() as u64,
                sha256: super::sha256_hex(&bytes),
            },
        );
        self.files.push((path, Content::Bytes(bytes)));
    }

    /// Adds a staged file whose size and sha256 the caller checked.
    pub fn add_file(&mut self, path: String, staged: PathBuf, size: u64, sha256: String) {
        self.manifest
            .files
            .insert(path.clone(), FileEntry { size, sha256 });
        self.files.push((path, Content::File(staged)));
    }

    /// The bytes of the files added so far.
    pub fn payload_bytes(&self) -> u64 {
        self.manifest.files.values().map(|f| f.size).sum()
    }

    /// Writes the bundle to `out`; returns its size on disk.
    pub fn finish(self, out: &Path) -> Result<u64, BundleError> {
        let partial = out.with_extension("partial");
        let file = File::create(&partial).map_err(io(&partial))?;
        let gzip = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(1 << 20, file),
            flate2::Compression::default(),
        );
        let mut tar = tar::Builder::new(gzip);
        let manifest = self.manifest.to_bytes();
        append(
            &mut tar,
            MANIFEST_PATH,
            &manifest[..],
            manifest.len() as u64,
        )
        .map_err(io(&partial))?;
        for (path, content) in &self.files {
            match content {
                Content::Bytes(bytes) => append(&mut tar, path, &bytes[..], bytes.len() as u64),
                Content::File(staged) => {
                    let file = File::open(staged).map_err(io(staged))?;
                    let size = file.metadata().map_err(io(staged))?.len();
                    append(&mut tar, path, file, size)
                }
            }
            .map_err(io(&partial))?;
        }
        let gzip = tar.into_inner().map_err(io(&partial))?;
        let mut buffered = gzip.finish().map_err(io(&partial))?;
        buffered.flush().map_err(io(&partial))?;
        let file = buffered
            .into_inner()
            .map_err(|e| io(&partial)(e.into_error()))?;
        file.sync_all().map_err(io(&partial))?;
        std::fs::rename(&partial, out).map_err(io(out))?;
        std::fs::metadata(out).map(|m| m.len()).map_err(io(out))
    }
}

/// One regular file entry: mode 0644, no owner, time 0 (a bundle's bytes
/// depend on its contents only).
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: impl std::io::Read,
    size: u64,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
}
