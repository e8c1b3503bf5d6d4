//! The bundle's manifest: what a bundle holds, each file's size and sha256,
//! each crate's name, version and index `cksum`, and where it came from.
//! It is the bundle's first entry, so an import knows what to expect before
//! it reads any other, and refuses anything it does not list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest's entry name in the tar.
pub const MANIFEST_PATH: &str = "manifest.json";
/// What `format` says; an import refuses any other.
pub const FORMAT: &str = "crate-mirror-bundle/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// When the bundle was made (RFC 2822 style, as HTTP dates are).
    pub created: String,
    /// The upstream the exporting mirror mirrors (no credentials: a URL's
    /// user and password are dropped), or the mirror it was exported from.
    pub source: String,
    /// Whether index files hold only the lines of bundled versions.
    pub pruned: bool,
    /// The sha256 of the manifest this bundle is incremental to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Every file after the manifest, by its path in the tar.
    pub files: BTreeMap<String, FileEntry>,
    /// Every `.crate` in the bundle.
    pub crates: Vec<CrateEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CrateEntry {
    /// The name as the index spells it.
    pub name: String,
    pub vers: String,
    /// The index's sha256 of the file (also its `sha256` in `files`).
    pub cksum: String,
    /// Its path in the tar.
    pub path: String,
}

impl Manifest {
    pub fn new(source: &str, pruned: bool, since: Option<String>) -> Self {
        Manifest {
            format: FORMAT.to_string(),
            created: httpdate::fmt_http_date(std::time::SystemTime::now()),
            source: without_credentials(source),
            pruned,
            since,
            files: BTreeMap::new(),
            crates: Vec::new(),
        }
    }

    /// The manifest as written into a bundle.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest: {e}"))?;
        if manifest.format != FORMAT {
            return Err(format!(
                "manifest: format {:?}, this version reads {FORMAT:?}",
                manifest.format
            ));
        }
        Ok(manifest)
    }

    /// The sha256 of the manifest's bytes: how `--since` names it.
    pub fn id(&self) -> String {
        crate::bundle::sha256_hex(&self.to_bytes())
    }
}

/// The tar path of an index file: `index/{prefix}/{name}` (lowercased).
pub fn index_path(name_key: &str) -> String {
    format!("index/{}/{name_key}", crate::index::path::prefix(name_key))
}

/// `url` without its user name and password (the unit test below shows
/// one): a manifest travels.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_travel() {
        let manifest = Manifest::new(
            "https://ops:s3cret@registry.example.com/index/",
            false,
            None,
        );
        assert_eq!(manifest.source, "https://registry.example.com/index/");
        let text = String::from_utf8(manifest.to_bytes()).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("ops"));
    }

    #[test]
    fn round_trips_and_refuses_other_formats() {
        let mut manifest = Manifest::new("http://127.0.0.1:1/index/", true, None);
        manifest.files.insert(
            index_path("serde"),
            FileEntry {
                size: 3,
                sha256: "ab".into(),
            },
        );
        assert_eq!(
            Manifest::from_bytes(&manifest.to_bytes()).unwrap(),
            manifest
        );
        manifest.format = "other/9".into();
        assert!(Manifest::from_bytes(&manifest.to_bytes())
            .unwrap_err()
            .contains("other/9"));
        assert_eq!(index_path("serde"), "index/se/rd/serde");
    }
}
