//! Index files as sets of versions: pruned to what a bundle holds on export,
//! checked a line at a time as a bundle is read, and merged with what a data
//! dir has on import. Lines are kept byte for byte; only which lines, and
//! their order, change.
//!
//! A published version is immutable: its `.crate` never changes, so neither
//! may its index line, except for `yanked`. An import that would change an
//! existing version's line in any other way is refused (`MergeError`), as is
//! a bundle whose index file lists a version twice (which of the two lines
//! would be checked, and which stored, is then anyone's guess).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::index::lines::{is_sha256_hex, VersionRecord};

#[derive(Deserialize)]
struct Vers {
    vers: String,
}

/// The version of each line that parses (others are dropped: an index line
/// without a version is no line cargo could use).
fn versioned(body: &[u8]) -> impl Iterator<Item = (String, &[u8])> {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let vers = serde_json::from_slice::<Vers>(line).ok()?.vers;
            Some((vers, line))
        })
}

/// Only the lines of `keep`'s versions, in their order: with it, a resolve on
/// the far side can pick only versions whose `.crate` travelled.
pub fn prune(body: &[u8], keep: &BTreeSet<String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (vers, line) in versioned(body) {
        if keep.contains(&vers) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

/// Why a bundle's index file cannot be merged into a site's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("{name} {vers} is listed twice in the bundle's index file")]
    Twice { name: String, vers: String },
    #[error(
        "{name} {vers} is already on this site with another index line ({fields}): \
         an import never changes a published version, only whether it is yanked"
    )]
    Changed {
        name: String,
        vers: String,
        /// What differs, for people: `cksum differs`, `cksum and deps differ`.
        fields: String,
    },
}

/// A line the site did not have before a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub name: String,
    pub vers: String,
    pub cksum: String,
}

/// The outcome of a merge.
#[derive(Debug)]
pub struct Merged {
    pub body: Vec<u8>,
    /// The incoming lines of versions `existing` did not list.
    pub added: Vec<Added>,
}

/// A line as a JSON object without `yanked`: what must be equal for a line
/// to replace another.
fn without_yanked(line: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).ok()?;
    object.remove("yanked");
    Some(object)
}

/// The fields in which two lines differ (`yanked` aside), for the error.
fn differing_fields(old: &[u8], new: &[u8]) -> String {
    let (Some(old), Some(new)) = (without_yanked(old), without_yanked(new)) else {
        return "the line does not parse".to_string();
    };
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let differ: Vec<&str> = keys
        .into_iter()
        .filter(|key| old.get(*key) != new.get(*key))
        .map(String::as_str)
        .collect();
    match differ.as_slice() {
        [one] => format!("{one} differs"),
        [init @ .., last] => format!("{} and {last} differ", init.join(", ")),
        [] => "the same fields, written differently".to_string(),
    }
}

/// The name a line gives, or `fallback` (for errors).
fn name_of(line: &[u8], fallback: &str) -> String {
    serde_json::from_slice::<VersionRecord>(line)
        .map(|record| record.name)
        .unwrap_or_else(|_| fallback.to_string())
}

/// The union of two index files by version, in semver order. For a version
/// both have, `incoming`'s line is taken when it differs from the existing
/// one in `yanked` only (a later bundle carries the later state of a yank);
/// any other difference is `MergeError::Changed`, and a version `incoming`
/// lists twice is `MergeError::Twice`. The order is a function of the set of
/// lines, so importing bundles one after another gives the bytes one bundle
/// of them all gives. `key` names the crate in errors when a line does not.
pub fn merge(key: &str, existing: Option<&[u8]>, incoming: &[u8]) -> Result<Merged, MergeError> {
    let mut lines: BTreeMap<String, &[u8]> = BTreeMap::new();
    for (vers, line) in existing.into_iter().flat_map(versioned) {
        lines.insert(vers, line);
    }
    let mut seen = BTreeSet::new();
    let mut added = Vec::new();
    for (vers, line) in versioned(incoming) {
        if !seen.insert(vers.clone()) {
            return Err(MergeError::Twice {
                name: name_of(line, key),
                vers,
            });
        }
        match lines.get(&vers) {
            Some(old) if *old == line => {}
            Some(old) => {
                if without_yanked(old).is_none() || without_yanked(old) != without_yanked(line) {
                    return Err(MergeError::Changed {
                        name: name_of(line, key),
                        fields: differing_fields(old, line),
                        vers,
                    });
                }
                lines.insert(vers, line);
            }
            None => {
                let record = serde_json::from_slice::<VersionRecord>(line).ok();
                added.push(Added {
                    name: record
                        .as_ref()
                        .map_or_else(|| key.to_string(), |r| r.name.clone()),
                    cksum: record.map(|r| r.cksum).unwrap_or_default(),
                    vers: vers.clone(),
                });
                lines.insert(vers, line);
            }
        }
    }
    let mut ordered: Vec<(String, &[u8])> = lines.into_iter().collect();
    ordered.sort_by(|(a, _), (b, _)| {
        match (semver::Version::parse(a), semver::Version::parse(b)) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => a.cmp(b),
        }
    });
    let mut body = Vec::new();
    for (_, line) in ordered {
        body.extend_from_slice(line);
        body.push(b'\n');
    }
    Ok(Merged { body, added })
}

/// The versions an index file lists.
pub fn versions(body: &[u8]) -> BTreeSet<String> {
    versioned(body).map(|(vers, _)| vers).collect()
}

/// Checks a bundle's index file as it streams past, a line at a time: the
/// checks `index::lines::validate_index` makes of a whole file (every line
/// a JSON object naming the crate, with a version and a sha256 `cksum`; at
/// least one line), and no version twice. It keeps the line being read, the
/// versions seen (to find one twice) and the `cksum` of the versions asked
/// for (the bundle's crates), never the file.
pub struct LineCheck<'a> {
    key: &'a str,
    /// The versions whose `cksum` to keep.
    wanted: BTreeSet<&'a str>,
    partial: Vec<u8>,
    number: usize,
    lines: usize,
    seen: BTreeMap<String, usize>,
    cksums: BTreeMap<String, String>,
}

impl<'a> LineCheck<'a> {
    pub fn new(key: &'a str, wanted: impl IntoIterator<Item = &'a str>) -> Self {
        LineCheck {
            key,
            wanted: wanted.into_iter().collect(),
            partial: Vec::new(),
            number: 0,
            lines: 0,
            seen: BTreeMap::new(),
            cksums: BTreeMap::new(),
        }
    }

    /// The next bytes of the file.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.line(&bytes[..end])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&bytes[..end]);
                self.line(&line)?;
            }
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// The end of the file: the `cksum` of each wanted version it lists.
    pub fn finish(mut self) -> Result<BTreeMap<String, String>, String> {
        let last = std::mem::take(&mut self.partial);
        self.line(&last)?;
        if self.lines == 0 {
            return Err("no versions".to_string());
        }
        Ok(self.cksums)
    }

    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        self.number += 1;
        if line.is_empty() {
            return Ok(());
        }
        let number = self.number;
        let record: VersionRecord =
            serde_json::from_slice(line).map_err(|e| format!("line {number}: {e}"))?;
        if !record.name.eq_ignore_ascii_case(self.key) {
            return Err(format!("line {number} names {:?}", record.name));
        }
        if !is_sha256_hex(&record.cksum) {
            return Err(format!("line {number}: bad cksum"));
        }
        if let Some(first) = self.seen.insert(record.vers.clone(), number) {
            return Err(format!(
                "it lists version {} twice (lines {first} and {number})",
                record.vers
            ));
        }
        if self.wanted.contains(record.vers.as_str()) {
            self.cksums.insert(record.vers, record.cksum);
        }
        self.lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(vers: &str, yanked: bool) -> String {
        format!(
            r#"{{"name":"a","vers":"{vers}","deps":[],"cksum":"00","features":{{}},"yanked":{yanked}}}"#
        )
    }

    fn file(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    #[test]
    fn prune_keeps_only_the_listed_versions_byte_for_byte() {
        let body = file(&[
            line("1.0.0", false),
            line("1.1.0", false),
            line("2.0.0", true),
        ]);
        let kept = prune(&body, &BTreeSet::from(["1.1.0".to_string()]));
        assert_eq!(kept, file(&[line("1.1.0", false)]));
    }

    #[test]
    fn merge_never_loses_a_version_and_takes_a_yank() {
        let old = file(&[line("1.10.0", false), line("1.2.0", false)]);
        let new = file(&[line("1.2.0", true), line("2.0.0-rc.1", false)]);
        let merged = merge("a", Some(&old), &new).unwrap();
        assert_eq!(
            merged.body,
            file(&[
                line("1.2.0", true),
                line("1.10.0", false),
                line("2.0.0-rc.1", false)
            ])
        );
        assert_eq!(
            merged.added,
            [Added {
                name: "a".into(),
                vers: "2.0.0-rc.1".into(),
                cksum: "00".into()
            }]
        );
        // In the other order, the same versions (the other line for 1.2.0).
        let back = merge("a", Some(&new), &old).unwrap();
        assert_eq!(versions(&back.body), versions(&merged.body));
        assert_eq!(merge("a", None, &merged.body).unwrap().body, merged.body);
    }

    #[test]
    fn merge_refuses_any_change_but_yanked_and_a_version_twice() {
        let old = file(&[line("1.0.0", false)]);
        let changed = file(&[line("1.0.0", false).replace(r#""cksum":"00""#, r#""cksum":"01""#)]);
        let err = merge("a", Some(&old), &changed).unwrap_err();
        assert_eq!(
            err,
            MergeError::Changed {
                name: "a".into(),
                vers: "1.0.0".into(),
                fields: "cksum differs".into()
            }
        );
        let deps = file(&[line("1.0.0", true)
            .replace(r#""cksum":"00""#, r#""cksum":"01""#)
            .replace(r#""deps":[]"#, r#""deps":[{"name":"b"}]"#)]);
        let err = merge("a", Some(&old), &deps).unwrap_err().to_string();
        assert!(
            err.contains("a 1.0.0") && err.contains("cksum and deps differ"),
            "{err}"
        );
        let twice = file(&[line("2.0.0", false), line("2.0.0", true)]);
        assert_eq!(
            merge("a", None, &twice).unwrap_err(),
            MergeError::Twice {
                name: "a".into(),
                vers: "2.0.0".into()
            }
        );
    }

    #[test]
    fn line_check_streams_and_finds_a_version_twice_across_chunks() {
        let cksum = "ab".repeat(32);
        let good =
            |vers: &str| format!(r#"{{"name":"A","vers":"{vers}","deps":[],"cksum":"{cksum}"}}"#);
        let body = file(&[good("1.0.0"), good("1.1.0")]);
        for chunk in [1, 7, body.len()] {
            let mut check = LineCheck::new("a", ["1.1.0", "9.0.0"]);
            for piece in body.chunks(chunk) {
                check.feed(piece).unwrap();
            }
            let cksums = check.finish().unwrap();
            assert_eq!(cksums, BTreeMap::from([("1.1.0".into(), cksum.clone())]));
        }
        let twice = file(&[good("1.0.0"), good("1.1.0"), good("1.0.0")]);
        let mut check = LineCheck::new("a", []);
        let err = twice.chunks(5).try_for_each(|piece| check.feed(piece));
        assert_eq!(
            err.unwrap_err(),
            "it lists version 1.0.0 twice (lines 1 and 3)"
        );
        // No newline at the end, another crate's line, an empty file.
        let mut check = LineCheck::new("a", []);
        check.feed(good("1.0.0").as_bytes()).unwrap();
        assert!(check.finish().is_ok());
        let mut check = LineCheck::new("b", []);
        check.feed(&body).unwrap_err();
        assert_eq!(LineCheck::new("a", []).finish().unwrap_err(), "no versions");
    }
}
