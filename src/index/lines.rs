//! Reading the few fields of index lines that the mirror needs, without ever
//! rewriting the lines themselves (bodies are served byte for byte).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The fields of one index line that downloads depend on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionRecord {
    /// The crate's canonical name as published (may differ in case from a request).
    pub name: String,
    pub vers: String,
    /// Hex sha256 of the `.crate` file.
    pub cksum: String,
    #[serde(default)]
    pub yanked: bool,
}

/// Finds the line for `version` in an index file body. Lines that do not parse
/// are skipped: one bad line must not hide the others.
pub fn find_version(body: &[u8], version: &str) -> Option<VersionRecord> {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice::<VersionRecord>(line).ok())
        .find(|record| record.vers == version)
}

/// Checks an index file from the upstream before it is cached: every line must
/// be a JSON object with `vers` and a sha256 `cksum`, naming the crate `key`
/// (case-insensitively). A truncated, garbled or misdirected body is refused
/// rather than served to every client until the next revalidation.
pub fn validate_index(body: &[u8], key: &str) -> Result<(), String> {
    let mut lines = 0;
    for (number, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let record: VersionRecord =
            serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", number + 1))?;
        if !record.name.eq_ignore_ascii_case(key) {
            return Err(format!("line {} names {:?}", number + 1, record.name));
        }
        if !is_sha256_hex(&record.cksum) {
            return Err(format!("line {}: bad cksum", number + 1));
        }
        lines += 1;
    }
    if lines == 0 {
        return Err("no versions".to_string());
    }
    Ok(())
}

/// The newest index schema version cargo reads; it skips lines with a higher `v`.
pub const INDEX_SCHEMA_MAX: u64 = 2;

/// The head of an index line: enough to choose a version the way cargo's
/// resolver does, without reading its dependencies.
#[derive(Debug, Deserialize)]
pub struct ReleaseHead {
    pub vers: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub yanked: bool,
    /// Index schema version (absent means 1).
    #[serde(default)]
    pub v: Option<u64>,
}

/// One index line as the prefetcher reads it: its dependencies and features.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReleaseRecord {
    pub vers: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub deps: Vec<DependencyRecord>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub features: BTreeMap<String, Vec<String>>,
    /// Features using the newer syntax (`dep:`, `?/`), kept apart by the
    /// registry so that old cargo versions skip them; they count the same.
    #[serde(default, deserialize_with = "null_as_default")]
    pub features2: BTreeMap<String, Vec<String>>,
}

/// One dependency of an index line.
#[derive(Debug, Clone, Deserialize)]
pub struct DependencyRecord {
    /// The name the parent uses (the key in its Cargo.toml, what features name).
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub req: String,
    /// Features the parent asks of it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub features: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub optional: bool,
    #[serde(default = "yes", deserialize_with = "null_as_true")]
    pub default_features: bool,
    /// `normal`, `build` or `dev` (absent means normal).
    #[serde(default)]
    pub kind: Option<String>,
    /// Set when the dependency comes from another registry.
    #[serde(default)]
    pub registry: Option<String>,
    /// The real crate when the dependency is renamed.
    #[serde(default)]
    pub package: Option<String>,
}

impl DependencyRecord {
    /// The crate whose index file this dependency needs.
    pub fn crate_name(&self) -> &str {
        self.package.as_deref().unwrap_or(&self.name)
    }

    /// Dev-dependencies are only resolved for the workspace's own packages.
    pub fn is_dev(&self) -> bool {
        self.kind.as_deref() == Some("dev")
    }
}

fn yes() -> bool {
    true
}

/// Lines written by other tools sometimes say `null` where cargo's say nothing.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn null_as_true<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(true))
}

/// The non-empty lines of an index file body.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|b| *b == b'\n').filter(|line| !line.is_empty())
}

/// Whether `cksum` is a well-formed lowercase hex sha256.
pub fn is_sha256_hex(cksum: &str) -> bool {
    cksum.len() == 64
        && cksum
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"name":"Foo","vers":"1.0.0","deps":[],"cksum":"aa","features":{},"yanked":false}
not json at all
{"name":"Foo","vers":"1.0.1+build.7","deps":[],"cksum":"bb","features":{},"yanked":true,"future_field":1}
"#;

    #[test]
    fn finds_versions_and_skips_bad_lines() {
        let rec = find_version(BODY, "1.0.1+build.7").unwrap();
        assert_eq!(rec.cksum, "bb");
        assert!(rec.yanked);
        assert_eq!(rec.name, "Foo");
        assert_eq!(find_version(BODY, "1.0.0").unwrap().cksum, "aa");
        assert!(find_version(BODY, "1.0.1").is_none());
    }

    #[test]
    fn index_files_are_validated() {
        let good = format!(
            "{{\"name\":\"Foo\",\"vers\":\"1.0.0\",\"cksum\":\"{}\",\"new\":1}}\n",
            "a".repeat(64)
        );
        assert!(validate_index(good.as_bytes(), "foo").is_ok());
        assert!(validate_index(good.as_bytes(), "bar").is_err());
        assert!(validate_index(&good.as_bytes()[..good.len() / 2], "foo").is_err());
        assert!(validate_index(b"", "foo").is_err());
        assert!(validate_index(b"<html>oops</html>\n", "foo").is_err());
        assert!(validate_index(BODY, "foo").is_err());
    }

    #[test]
    fn release_records_tolerate_nulls_and_unknown_fields() {
        let line = br#"{"name":"x","vers":"1.0.0","cksum":"c","yanked":null,"v":2,"deps":[{"name":"alias","req":"^1","package":"Real","features":null,"optional":true,"default_features":null,"target":"cfg(unix)","kind":null,"registry":null,"new":1}],"features":{"a":["alias/b"]},"features2":null}"#;
        let head: ReleaseHead = serde_json::from_slice(line).unwrap();
        assert!(!head.yanked);
        assert_eq!(head.v, Some(2));
        let record: ReleaseRecord = serde_json::from_slice(line).unwrap();
        let dep = &record.deps[0];
        assert_eq!(dep.crate_name(), "Real");
        assert!(dep.optional && dep.default_features && !dep.is_dev());
        assert!(dep.features.is_empty());
        assert!(record.features2.is_empty());
        assert_eq!(record.features["a"], vec!["alias/b".to_string()]);
        assert_eq!(lines(b"a\n\nb\n").count(), 2);
    }

    #[test]
    fn checks_sha256_shape() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("abc"));
    }
}
