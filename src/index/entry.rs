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
    fn checks_sha256_shape() {
        assert!(is_sha256_hex(&"ab".repeat(32)));
        assert!(!is_sha256_hex(&"AB".repeat(32)));
        assert!(!is_sha256_hex("abc"));
    }
}
