//! Bundles: a verified slice of the registry in one file (a gzip'd tar of a
//! manifest, index files and `.crate` files), made by `export` on a machine
//! that reaches the upstream and read by `import` on one that does not.
//! Nothing here knows HTTP or the stores: `commands::export` and
//! `commands::import` feed and drain it.

pub mod index_lines;
pub mod manifest;
pub mod read;
pub mod write;

use sha2::{Digest, Sha256};

/// What can go wrong reading or writing a bundle. Every variant names the
/// entry (or file) it is about, so a damaged bundle says where.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a crate-mirror bundle (its first entry is not {manifest})", manifest = manifest::MANIFEST_PATH)]
    NotABundle(String),
    #[error("{0}")]
    Manifest(String),
    #[error("entry {0} is not listed in the manifest")]
    Unlisted(String),
    #[error("entry {entry} is damaged: {reason}")]
    Damaged { entry: String, reason: String },
    #[error("the bundle is cut short: entry {0} is missing")]
    Missing(String),
    #[error("the bundle is cut short or damaged after entry {after}: {reason}")]
    Truncated { after: String, reason: String },
    /// A file the manifest lists is larger than an import takes (sizes for
    /// people, `limit` says which limit and how it is set).
    #[error("entry {entry} is {size}, {limit}")]
    TooLarge {
        entry: String,
        size: String,
        limit: String,
    },
    #[error(
        "the bundle decompresses to {size}, more than import-max-bundle-size allows ({limit})"
    )]
    BundleTooLarge { size: String, limit: String },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `1536` as `1.5 KiB`: sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}
