//! The cached crates as the dashboard lists them: stored crate files grouped
//! by crate, narrowed by a search, one page at a time. Built from what the
//! backend can list (the local store's accounting, with last access times;
//! an S3 listing, without them) only when someone opens or searches the
//! list, never per dashboard poll.

use std::collections::BTreeMap;

use super::parse_crate_key;

/// Crates per page.
pub const PAGE_SIZE: usize = 50;
/// Longest search kept (crate names are at most 64 characters).
const MAX_QUERY_CHARS: usize = 64;

/// One stored crate file, as a backend lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCrateFile {
    pub key: String,
    pub size: u64,
    /// When it was last read or written (ms since the epoch), where the
    /// backend keeps that.
    pub last_access_ms: Option<u64>,
}

/// A search of crate names: a substring, case-insensitive, with `-` and `_`
/// alike (as cargo treats them in names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    needle: String,
}

impl Search {
    pub fn new(query: &str) -> Self {
        let needle: String = query
            .trim()
            .chars()
            .take(MAX_QUERY_CHARS)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        Self {
            needle: needle.replace('-', "_"),
        }
    }

    /// The search as shown back (normalised).
    pub fn as_str(&self) -> &str {
        &self.needle
    }

    /// Whether the crate stored under `key` matches, from the key's name
    /// directory (`crates/{prefix}/{name}/{file}`) without parsing it whole.
    pub fn matches_key(&self, key: &str) -> bool {
        key.rsplit('/')
            .nth(1)
            .is_some_and(|name| self.matches_name(name))
    }

    fn matches_name(&self, name: &str) -> bool {
        self.needle.is_empty()
            || name
                .to_ascii_lowercase()
                .replace('-', "_")
                .contains(&self.needle)
    }
}

/// One stored version of a crate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CachedVersion {
    pub version: String,
    pub size: u64,
    pub last_access_ms: Option<u64>,
}

/// A crate with its stored versions, newest version first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CachedCrate {
    pub name: String,
    pub versions: Vec<CachedVersion>,
    /// The sizes of its versions, added up.
    pub bytes: u64,
    /// The latest access of any of its versions.
    pub last_access_ms: Option<u64>,
}

/// One page of the crates that match a search, by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CratePage {
    pub query: String,
    /// From 1.
    pub page: usize,
    /// At least 1, even when nothing matches.
    pub pages: usize,
    pub per_page: usize,
    /// Over every page: the crates, versions and bytes that match.
    pub crates_matching: usize,
    pub versions_matching: usize,
    pub bytes_matching: u64,
    pub crates: Vec<CachedCrate>,
}

/// Page `page` (from 1; 0 is taken as 1) of the crates among `files` that
/// match `search`. A page past the last is empty, not an error.
pub fn page(
    files: impl IntoIterator<Item = StoredCrateFile>,
    search: &Search,
    page: usize,
) -> CratePage {
    let mut by_name: BTreeMap<String, Vec<CachedVersion>> = BTreeMap::new();
    let (mut versions_matching, mut bytes_matching) = (0, 0);
    for file in files {
        let Some((name, version)) = parse_crate_key(&file.key) else {
            continue;
        };
        if !search.matches_name(&name) {
            continue;
        }
        versions_matching += 1;
        bytes_matching += file.size;
        by_name.entry(name).or_default().push(CachedVersion {
            version,
            size: file.size,
            last_access_ms: file.last_access_ms,
        });
    }
    let crates_matching = by_name.len();
    let pages = crates_matching.div_ceil(PAGE_SIZE).max(1);
    let page = page.max(1);
    let crates = by_name
        .into_iter()
        .skip((page - 1).saturating_mul(PAGE_SIZE))
        .take(PAGE_SIZE)
        .map(|(name, mut versions)| {
            versions.sort_by(|a, b| newest_first(&a.version, &b.version));
            CachedCrate {
                name,
                bytes: versions.iter().map(|v| v.size).sum(),
                last_access_ms: versions.iter().filter_map(|v| v.last_access_ms).max(),
                versions,
            }
        })
        .collect();
    CratePage {
        query: search.as_str().to_string(),
        page,
        pages,
        per_page: PAGE_SIZE,
        crates_matching,
        versions_matching,
        bytes_matching,
        crates,
    }
}

/// Semantic version order, newest first; a version that does not parse
/// goes after those that do, by text.
fn newest_first(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => b.cmp(&a),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => b.cmp(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::crate_key;

    fn file(name: &str, version: &str, size: u64, access: u64) -> StoredCrateFile {
        StoredCrateFile {
            key: crate_key(name, version),
            size,
            last_access_ms: Some(access),
        }
    }

    #[test]
    fn crates_are_grouped_with_their_versions_newest_first() {
        let files = vec![
            file("serde", "1.9.0", 10, 100),
            file("serde", "1.10.0", 20, 50),
            file("abc", "0.1.0", 5, 7),
            StoredCrateFile {
                key: "tmp/x.part".into(),
                size: 1,
                last_access_ms: None,
            },
        ];
        let listed = page(files, &Search::new(""), 1);
        assert_eq!((listed.crates_matching, listed.versions_matching), (2, 3));
        assert_eq!(listed.bytes_matching, 35);
        assert_eq!(listed.pages, 1);
        assert_eq!(listed.crates[0].name, "abc");
        let serde = &listed.crates[1];
        assert_eq!(serde.bytes, 30);
        assert_eq!(serde.last_access_ms, Some(100));
        let versions: Vec<&str> = serde.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["1.10.0", "1.9.0"]);
    }

    #[test]
    fn search_is_a_substring_with_dash_and_underscore_alike() {
        let files = || {
            vec![
                file("serde_json", "1.0.0", 1, 1),
                file("serde-value", "0.7.0", 1, 1),
                file("rand", "0.8.5", 1, 1),
            ]
        };
        let names = |query: &str| -> Vec<String> {
            page(files(), &Search::new(query), 1)
                .crates
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(names("SERDE"), ["serde-value", "serde_json"]);
        assert_eq!(names("serde-json"), ["serde_json"]);
        assert_eq!(names("serde_val"), ["serde-value"]);
        assert!(names("nothing").is_empty());
        assert!(Search::new("rand").matches_key(&crate_key("rand", "0.8.5")));
        assert!(!Search::new("rand").matches_key("crates/se/rd/serde/serde-1.0.0.crate"));
        assert_eq!(
            Search::new(&"x".repeat(500)).as_str().len(),
            MAX_QUERY_CHARS
        );
    }

    #[test]
    fn pages_split_the_crates_by_name() {
        let files: Vec<StoredCrateFile> = (0..(PAGE_SIZE * 2 + 3))
            .map(|n| file(&format!("c{n:04}"), "1.0.0", 1, 1))
            .collect();
        let search = Search::new("");
        let second = page(files.clone(), &search, 2);
        assert_eq!(second.pages, 3);
        assert_eq!(second.crates.len(), PAGE_SIZE);
        assert_eq!(second.crates[0].name, format!("c{PAGE_SIZE:04}"));
        assert_eq!(page(files.clone(), &search, 3).crates.len(), 3);
        assert!(page(files.clone(), &search, 99).crates.is_empty());
        assert_eq!(page(files, &search, 0).page, 1);
        let none = page(Vec::new(), &search, 1);
        assert_eq!((none.pages, none.crates_matching), (1, 0));
    }
}
