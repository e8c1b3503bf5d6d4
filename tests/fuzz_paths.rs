//! Property tests of everything that parses client input (paths, names,
//! versions, percent-encoded segments, Authorization headers), standing in for
//! `cargo fuzz`, which needs a nightly toolchain that cannot be installed here.
//! CI runs them with a fixed case count (PROPTEST_CASES, default 4096 below).

use crate_mirror::auth::TokenSet;
use crate_mirror::index::path::{
    decode_segment, parse_index_path, CrateName, CrateVersion, IndexRequest,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn safe_name(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key.as_bytes()[0].is_ascii_lowercase()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

proptest! {
    #![proptest_config(config())]

    /// Any string: no panic, and whatever is accepted is a safe name whose
    /// canonical path is exactly what was asked for (lowercased).
    #[test]
    fn index_paths_accept_only_canonical_safe_names(raw in "\\PC{0,90}") {
        if let Ok(IndexRequest::File(name)) = parse_index_path(&raw) {
            prop_assert!(safe_name(name.key()), "{:?}", name.key());
            prop_assert_eq!(name.index_path(), raw.to_ascii_lowercase());
        }
    }

    /// Strings made of path-ish characters, where near misses are likely.
    #[test]
    fn path_like_input_never_escapes(raw in "[a-zA-Z0-9_./%-]{0,80}") {
        match parse_index_path(&raw) {
            Ok(IndexRequest::File(name)) => {
                prop_assert!(!name.index_path().contains(".."));
                prop_assert!(!name.index_path().contains('%'));
                prop_assert!(safe_name(name.key()));
            }
            Ok(IndexRequest::Config) => prop_assert_eq!(raw, "config.json"),
            Err(_) => {}
        }
    }

    /// Every valid name round-trips through its own index path.
    #[test]
    fn valid_names_round_trip(raw in "[a-zA-Z][a-zA-Z0-9_-]{0,63}") {
        let name = CrateName::parse(&raw).expect("a valid name");
        let parsed = parse_index_path(&name.index_path()).expect("its own path parses");
        prop_assert_eq!(parsed, IndexRequest::File(CrateName::parse(&raw.to_ascii_lowercase()).unwrap()));
    }

    /// Decoded download segments only ever hold name/version characters.
    #[test]
    fn decoded_segments_hold_no_separators(raw in "[a-zA-Z0-9%+._/-]{0,60}") {
        if let Ok(segment) = decode_segment(&raw) {
            prop_assert!(!segment.is_empty());
            prop_assert!(segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+')));
        }
    }

    /// Versions: no panic; accepted ones are semver and bounded.
    #[test]
    fn versions_are_semver_and_bounded(raw in "\\PC{0,200}") {
        if let Ok(version) = CrateVersion::parse(&raw) {
            prop_assert!(version.as_str().len() <= 128);
            prop_assert!(semver::Version::parse(version.as_str()).is_ok());
        }
    }

    /// Authorization headers of any bytes: no panic, never granted by accident.
    #[test]
    fn authorization_headers_never_grant_by_accident(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
        let set = TokenSet::new(vec![[7u8; 32]]);
        prop_assert_ne!(set.check(Some(&raw)), crate_mirror::auth::AuthCheck::Granted);
    }
}
