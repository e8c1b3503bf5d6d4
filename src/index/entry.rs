//! Reading the few fields of index lines that the mirror needs, without ever
//! rewriting the lines themselves (bodies are served byte for byte).

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

#[derive(Debug, Deserialize)]
struct DependencyLine {
    vers: String,
    #[serde(default)]
    yanked: bool,
    #[serde(default)]
    deps: Vec<DependencyRecord>,
}

#[derive(Debug, Deserialize)]
struct DependencyRecord {
    name: String,
    /// The real crate when the dependency is renamed.
    package: Option<String>,
    kind: Option<String>,
}

/// The crates that the newest version of each semver-incompatible series
/// depends on (normal and build dependencies on every target, and dev ones when
/// asked): what cargo will most likely ask for next. Yanked versions are not
/// chosen; names come back lowercased and deduplicated, unvalidated.
pub fn dependencies_of_newest(body: &[u8], dev_dependencies: bool) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut newest: BTreeMap<(u64, u64, u64), (semver::Version, DependencyLine)> = BTreeMap::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(record) = serde_json::from_slice::<DependencyLine>(line) else {
            continue;
        };
        let Ok(version) = semver::Version::parse(&record.vers) else {
            continue;
        };
        if record.yanked {
            continue;
        }
        // Cargo's compatibility rule: 1.x.y share a series, 0.x.y by minor, 0.0.z alone.
        let series = match (version.major, version.minor) {
            (0, 0) => (0, 0, version.patch),
            (0, minor) => (0, minor, 0),
            (major, _) => (major, 0, 0),
        };
        match newest.get(&series) {
            Some((best, _)) if *best >= version => {}
            _ => {
                newest.insert(series, (version, record));
            }
        }
    }
    let mut names = BTreeSet::new();
    for (_, (_, record)) in newest {
        for dep in record.deps {
            let wanted = match dep.kind.as_deref() {
                None | Some("normal") | Some("build") => true,
                Some("dev") => dev_dependencies,
                Some(_) => false,
            };
            if wanted {
                names.insert(dep.package.unwrap_or(dep.name).to_ascii_lowercase());
            }
        }
    }
    names.into_iter().collect()
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
    fn dependencies_come_from_the_newest_version_of_each_series() {
        let line = |vers: &str, yanked: bool, deps: &str| {
            format!(
                r#"{{"name":"x","vers":"{vers}","cksum":"c","yanked":{yanked},"deps":[{deps}]}}"#
            )
        };
        let dep =
            |name: &str, kind: &str| format!(r#"{{"name":"{name}","req":"*","kind":"{kind}"}}"#);
        let body = [
            line("1.0.0", false, &dep("old-one", "normal")),
            line(
                "1.2.0",
                false,
                &format!("{},{}", dep("Serde", "normal"), dep("cc", "build")),
            ),
            line("1.3.0", true, &dep("yanked-dep", "normal")),
            line(
                "2.0.0",
                false,
                &format!(
                    "{},{}",
                    dep("tester", "dev"),
                    r#"{"name":"alias","package":"real-crate","req":"1"}"#
                ),
            ),
            line("0.3.1", false, &dep("zero-three", "normal")),
            line("0.3.0", false, &dep("zero-three-old", "normal")),
            "not json".to_string(),
        ]
        .join("\n");
        assert_eq!(
            dependencies_of_newest(body.as_bytes(), false),
            vec!["cc", "real-crate", "serde", "zero-three"]
        );
        assert!(dependencies_of_newest(body.as_bytes(), true).contains(&"tester".to_string()));
    }

    #[test]
    fn checks_sha256_shape() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("abc"));
    }
}
