//! Index files as sets of versions: pruned to what a bundle holds on export,
//! merged with what a data dir has on import. Lines are kept byte for byte;
//! only which lines, and their order, change.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

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

/// The union of two index files by version, `incoming`'s line winning for a
/// version both have (a later bundle carries the later state, e.g. a yank),
/// in semver order. The order is a function of the set of lines, so importing
/// bundles one after another gives the bytes one bundle of them all gives.
pub fn merge(existing: Option<&[u8]>, incoming: &[u8]) -> Vec<u8> {
    let mut lines: BTreeMap<String, &[u8]> = BTreeMap::new();
    for (vers, line) in existing.into_iter().flat_map(versioned) {
        lines.insert(vers, line);
    }
    for (vers, line) in versioned(incoming) {
        lines.insert(vers, line);
    }
    let mut ordered: Vec<(String, &[u8])> = lines.into_iter().collect();
    ordered.sort_by(|(a, _), (b, _)| {
        match (semver::Version::parse(a), semver::Version::parse(b)) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            _ => a.cmp(b),
        }
    });
    let mut out = Vec::new();
    for (_, line) in ordered {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// The versions an index file lists.
pub fn versions(body: &[u8]) -> BTreeSet<String> {
    versioned(body).map(|(vers, _)| vers).collect()
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
    fn merge_never_loses_a_version_and_takes_the_newer_line() {
        let old = file(&[line("1.10.0", false), line("1.2.0", false)]);
        let new = file(&[line("1.2.0", true), line("2.0.0-rc.1", false)]);
        let merged = merge(Some(&old), &new);
        assert_eq!(
            merged,
            file(&[
                line("1.2.0", true),
                line("1.10.0", false),
                line("2.0.0-rc.1", false)
            ])
        );
        // In the other order, the same versions (the other line for 1.2.0).
        assert_eq!(versions(&merge(Some(&new), &old)), versions(&merged));
        assert_eq!(merge(None, &merged), merged);
    }
}
