//! Crate names and versions: the vocabulary that storage, the upstream client,
//! the git index and HTTP all speak. Each is checked once, when it is made from
//! outside input, so code that holds one never checks again.

use std::fmt;

use crate::index::path::prefix;

/// Longest crate name the registry accepts.
pub const MAX_NAME_LEN: usize = 64;
/// Longest version string we accept; real ones are far shorter.
pub const MAX_VERSION_LEN: usize = 128;

/// Why a name or version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid crate name")]
    InvalidName,
    #[error("invalid version: not semver")]
    InvalidVersion,
}

/// A validated crate name, kept as the client spelled it (case matters for
/// `{crate}` in download URLs; the index key is [`CrateName::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrateName {
    name: String,
    key: String,
}

impl CrateName {
    /// Accepts ASCII alphanumerics, `-` and `_`, a leading letter, at most 64 characters.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_NAME_LEN
            && bytes[0].is_ascii_alphabetic()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        if !valid {
            return Err(NameError::InvalidName);
        }
        Ok(Self {
            name: raw.to_string(),
            key: raw.to_ascii_lowercase(),
        })
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The lowercased name: the identity of the crate in the index and in storage.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The relative sparse-index path of this crate, e.g. `se/rd/serde`.
    pub fn index_path(&self) -> String {
        format!("{}/{}", prefix(&self.key), self.key)
    }
}

impl fmt::Display for CrateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A validated semver version string, `+build` metadata included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrateVersion(String);

impl CrateVersion {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.len() > MAX_VERSION_LEN || semver::Version::parse(raw).is_err() {
            return Err(NameError::InvalidVersion);
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CrateVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(CrateName::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            CrateName::parse(&"a".repeat(65)),
            Err(NameError::InvalidName)
        );
        assert_eq!(CrateName::parse("1abc"), Err(NameError::InvalidName));
        assert_eq!(CrateName::parse("_abc"), Err(NameError::InvalidName));
        assert_eq!(CrateName::parse("ab c"), Err(NameError::InvalidName));
        assert_eq!(CrateName::parse("abc.d"), Err(NameError::InvalidName));
        assert!(CrateName::parse("serde_JSON-x").is_ok());
    }

    #[test]
    fn versions_are_semver() {
        assert!(CrateVersion::parse("1.0.0").is_ok());
        assert!(CrateVersion::parse("1.0.0-alpha.1+build.5").is_ok());
        assert!(CrateVersion::parse("1.0").is_err());
        assert!(CrateVersion::parse("../1.0.0").is_err());
        assert!(CrateVersion::parse(&format!("1.0.0+{}", "a".repeat(200))).is_err());
    }
}
