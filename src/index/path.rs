//! The sparse-index paths derived from crate names, and the percent-decoding
//! of download URL segments.
//!
//! With `crate::names`, this is the only place that interprets what a client
//! put in a URL. Everything downstream receives a [`CrateName`] or a
//! [`CrateVersion`] that has already been checked, so no hostile byte can
//! reach the filesystem, sled or the upstream.

use crate::names::{CrateName, NameError, MAX_NAME_LEN};

/// Why a client-supplied path, name or version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid crate name")]
    InvalidName,
    #[error("invalid version: not semver")]
    InvalidVersion,
    #[error("malformed path")]
    Malformed,
    /// The directory part of an index path does not belong to the name in it.
    #[error("index path prefix does not match the crate name")]
    PrefixMismatch,
}

impl From<NameError> for PathError {
    fn from(err: NameError) -> Self {
        match err {
            NameError::InvalidName => PathError::InvalidName,
            NameError::InvalidVersion => PathError::InvalidVersion,
        }
    }
}

/// The directory part of the index path for a name: `1`, `2`, `3/x` or `ab/cd`.
/// `name` is used as given; pass the lowercased name for index paths.
pub fn prefix(name: &str) -> String {
    match name.len() {
        1 => "1".to_string(),
        2 => "2".to_string(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    }
}

/// What a request below `/index/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexRequest {
    Config,
    File(CrateName),
}

/// Parses the part of a raw (still percent-encoded) URL path after `/index/`.
///
/// Index paths only ever contain `[a-z0-9_-]` and `/`, so anything percent-encoded,
/// any dot outside `config.json` and any empty segment is refused before decoding.
pub fn parse_index_path(raw: &str) -> Result<IndexRequest, PathError> {
    if raw == "config.json" {
        return Ok(IndexRequest::Config);
    }
    if raw.len() > MAX_NAME_LEN + 8 {
        return Err(PathError::Malformed);
    }
    let lower = raw.to_ascii_lowercase();
    let segments: Vec<&str> = lower.split('/').collect();
    let (dirs, file) = match segments.split_last() {
        Some((file, dirs)) if !dirs.is_empty() => (dirs, *file),
        _ => return Err(PathError::Malformed),
    };
    let name = CrateName::parse(file)?;
    if dirs.join("/") != prefix(name.key()) {
        return Err(PathError::PrefixMismatch);
    }
    Ok(IndexRequest::File(name))
}

/// Percent-decodes one path segment of a download URL and checks that only
/// characters legal in names and versions remain (`+` arrives as `%2B`).
pub fn decode_segment(raw: &str) -> Result<String, PathError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::Malformed)?;
    let ok = !decoded.is_empty()
        && decoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if ok {
        Ok(decoded.into_owned())
    } else {
        Err(PathError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> IndexRequest {
        IndexRequest::File(CrateName::parse(name).unwrap())
    }

    #[test]
    fn prefixes_follow_name_length() {
        assert_eq!(parse_index_path("1/a"), Ok(file("a")));
        assert_eq!(parse_index_path("2/ab"), Ok(file("ab")));
        assert_eq!(parse_index_path("3/a/abc"), Ok(file("abc")));
        assert_eq!(parse_index_path("se/rd/serde"), Ok(file("serde")));
        assert_eq!(parse_index_path("config.json"), Ok(IndexRequest::Config));
    }

    #[test]
    fn mixed_case_paths_are_lowercased() {
        let parsed = parse_index_path("in/fl/Inflector").unwrap();
        assert_eq!(parsed, file("inflector"));
    }

    #[test]
    fn mismatched_prefixes_are_refused() {
        assert_eq!(parse_index_path("1/ab"), Err(PathError::PrefixMismatch));
        assert_eq!(parse_index_path("3/b/abc"), Err(PathError::PrefixMismatch));
        assert_eq!(parse_index_path("se/rd/serdx"), Ok(file("serdx")));
        assert_eq!(
            parse_index_path("sx/rd/serde"),
            Err(PathError::PrefixMismatch)
        );
        assert_eq!(
            parse_index_path("se/rd/x/serde"),
            Err(PathError::PrefixMismatch)
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        for raw in [
            "",
            "serde",
            "../config.json",
            "se/rd/..",
            "se/rd/%2e%2e",
            "se%2frd/serde",
            "se/rd/ser%00de",
            "1/",
            "/1/a",
            "3/a/a.c",
            "2/1a",
        ] {
            assert!(parse_index_path(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn segments_decode_plus_only_to_legal_characters() {
        assert_eq!(decode_segment("1.0.0%2Bbuild").unwrap(), "1.0.0+build");
        assert_eq!(decode_segment("1.0.0+build").unwrap(), "1.0.0+build");
        assert!(decode_segment("..%2f..").is_err());
        assert!(decode_segment("a%00").is_err());
        assert!(decode_segment("%ff").is_err());
        assert!(decode_segment("").is_err());
    }
}
