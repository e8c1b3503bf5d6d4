//! Property tests of everything that parses client input (index paths, names,
//! versions, percent-encoded download segments, Authorization headers),
//! standing in for `cargo fuzz`, which needs a nightly toolchain that cannot be
//! installed here.
//!
//! Random strings almost never form a valid name, prefix or version, so the
//! inputs come from the grammar: a valid value, then one mutation of it
//! (case, prefix, encodings, traversal, truncation, padding). Each input has a
//! known expected answer, and each property counts how many inputs were
//! accepted and how many refused and fails unless both sides ran often, so a
//! generator that drifts into producing only garbage (or only valid input) is
//! caught. CI runs them with a fixed case count (PROPTEST_CASES, default 4096).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate_mirror::auth::{new_token, parse_token_hash, AuthCheck, TokenSet};
use crate_mirror::index::path::{decode_segment, parse_index_path, prefix, IndexRequest};
use crate_mirror::names::{CrateName, CrateVersion};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

/// Runs `check` on `cases()` inputs; `check` says whether the parser
/// accepted its input (after asserting that this was the expected answer).
/// Fails unless at least a tenth of the inputs went each way.
fn run_counted<S: Strategy>(
    what: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |input| {
        let counter = if check(input)? { &accepted } else { &refused };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    if let Err(err) = result {
        panic!("{what}: {err}");
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    eprintln!("{what}: {accepted} accepted, {refused} refused");
    let floor = (cases() / 10) as usize;
    assert!(
        accepted >= floor && refused >= floor,
        "{what}: {accepted} accepted and {refused} refused of {} cases: one side is barely exercised",
        cases()
    );
}

/// A valid crate name, in any case.
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_-]{0,63}"
}

/// What is done to a valid name's index path, and whether the result is
/// still one the mirror must accept.
#[derive(Debug, Clone)]
enum PathChange {
    /// Unchanged: accepted.
    None,
    /// The whole path upper-cased: accepted (cargo's paths are lowercase,
    /// a client's case is forgiven).
    Upper,
    /// One character of the prefix directories replaced: refused.
    Prefix(usize, char),
    /// A percent-encoding inserted at a position: refused.
    Encoded(usize, &'static str),
    /// `../` or `/..` put somewhere: refused.
    Traversal(usize),
    /// An empty segment (`//`): refused.
    DoubleSlash(usize),
    /// One more segment after the name: refused.
    Extra(String),
}

fn path_change() -> impl Strategy<Value = PathChange> {
    prop_oneof![
        3 => Just(PathChange::None),
        1 => Just(PathChange::Upper),
        1 => (any::<usize>(), proptest::char::range('0', 'z')).prop_map(|(i, c)| PathChange::Prefix(i, c)),
        1 => (any::<usize>(), prop_oneof![Just("%2e"), Just("%2f"), Just("%2F"), Just("%00"), Just("%61"), Just("%")])
            .prop_map(|(i, e)| PathChange::Encoded(i, e)),
        1 => any::<usize>().prop_map(PathChange::Traversal),
        1 => any::<usize>().prop_map(PathChange::DoubleSlash),
        1 => "[a-z0-9]{1,8}".prop_map(PathChange::Extra),
    ]
}

/// `change` applied to `path`, and whether the result must be accepted;
/// `None` when the change happens to leave the path as it was.
fn changed_path(path: &str, change: &PathChange) -> Option<(String, bool)> {
    let at = |i: usize| {
        // A char boundary: paths are ASCII.
        i % (path.len() + 1)
    };
    let (raw, accept) = match change {
        PathChange::None => (path.to_string(), true),
        PathChange::Upper => (path.to_ascii_uppercase(), true),
        PathChange::Prefix(i, c) => {
            let dirs = path.rfind('/').expect("a prefix");
            let i = i % dirs;
            if path.as_bytes()[i] == b'/' || path[i..].starts_with(*c) {
                return None;
            }
            let c = c.to_ascii_lowercase();
            if path.as_bytes()[i].eq_ignore_ascii_case(&(c as u8)) {
                return None;
            }
            (format!("{}{c}{}", &path[..i], &path[i + 1..]), false)
        }
        PathChange::Encoded(i, e) => {
            let i = at(*i);
            (format!("{}{e}{}", &path[..i], &path[i..]), false)
        }
        PathChange::Traversal(i) => match i % 3 {
            0 => (format!("../{path}"), false),
            1 => (format!("{path}/.."), false),
            _ => {
                let i = at(*i);
                (format!("{}/../{}", &path[..i], &path[i..]), false)
            }
        },
        PathChange::DoubleSlash(i) => {
            let i = at(*i);
            (format!("{}//{}", &path[..i], &path[i..]), false)
        }
        PathChange::Extra(segment) => (format!("{path}/{segment}"), false),
    };
    Some((raw, accept))
}

#[test]
fn index_paths_from_the_grammar_are_accepted_exactly_when_canonical() {
    run_counted("index paths", (name(), path_change()), |(name, change)| {
        let path = CrateName::parse(&name).expect("a valid name").index_path();
        let Some((raw, expected)) = changed_path(&path, &change) else {
            // The change left the path valid; count it as what it is.
            return Ok(parse_index_path(&path).is_ok());
        };
        let parsed = parse_index_path(&raw);
        prop_assert_eq!(
            parsed.is_ok(),
            expected,
            "{:?} from {:?}: {:?}",
            raw,
            change,
            parsed
        );
        if let Ok(request) = parsed {
            let IndexRequest::File(parsed) = request else {
                return Err(TestCaseError::fail(format!("{raw:?} read as config.json")));
            };
            prop_assert_eq!(parsed.key(), name.to_ascii_lowercase());
            prop_assert_eq!(parsed.index_path(), raw.to_ascii_lowercase());
            prop_assert_eq!(
                prefix(parsed.key()).len() + 1 + parsed.key().len(),
                raw.len()
            );
        }
        Ok(expected)
    });
}

/// A valid version: numbers without leading zeros, optional prerelease and
/// build identifiers (alphanumeric, starting with a letter, so never a
/// numeric identifier with a leading zero).
fn version() -> impl Strategy<Value = String> {
    let number = "(0|[1-9][0-9]{0,5})";
    let ident = "[a-zA-Z][0-9A-Za-z-]{0,9}";
    (
        number,
        number,
        number,
        proptest::option::of(proptest::collection::vec(ident, 1..3)),
        proptest::option::of(ident),
    )
        .prop_map(|(major, minor, patch, pre, build)| {
            let mut v = format!("{major}.{minor}.{patch}");
            if let Some(pre) = pre {
                v = format!("{v}-{}", pre.join("."));
            }
            if let Some(build) = build {
                v = format!("{v}+{build}");
            }
            v
        })
}

#[derive(Debug, Clone)]
enum VersionChange {
    None,
    /// A leading zero on the major number: refused (semver).
    LeadingZero,
    /// The patch number dropped: refused.
    NoPatch,
    /// Build metadata padding it past 128 bytes: refused.
    TooLong,
    /// A `v` in front: refused.
    VPrefix,
    /// A separator or an encoding inserted: refused.
    Inserted(usize, &'static str),
}

fn version_change() -> impl Strategy<Value = VersionChange> {
    prop_oneof![
        3 => Just(VersionChange::None),
        1 => Just(VersionChange::LeadingZero),
        1 => Just(VersionChange::NoPatch),
        1 => Just(VersionChange::TooLong),
        1 => Just(VersionChange::VPrefix),
        1 => (any::<usize>(), prop_oneof![Just("/"), Just("%2f"), Just(" "), Just("\0"), Just("..")])
            .prop_map(|(i, s)| VersionChange::Inserted(i, s)),
    ]
}

#[test]
fn versions_from_the_grammar_are_accepted_exactly_when_semver_and_bounded() {
    run_counted(
        "versions",
        (version(), version_change()),
        |(version, change)| {
            let (raw, expected) = match &change {
                VersionChange::None => (version.clone(), version.len() <= 128),
                VersionChange::LeadingZero => (format!("0{version}"), false),
                VersionChange::NoPatch => {
                    let core = version.split(['-', '+']).next().unwrap_or("");
                    let cut = core.rfind('.').expect("three numbers");
                    (
                        format!("{}{}", &version[..cut], &version[core.len()..]),
                        false,
                    )
                }
                VersionChange::TooLong => {
                    let sep = if version.contains('+') { "." } else { "+" };
                    (format!("{version}{sep}{}", "b".repeat(130)), false)
                }
                VersionChange::VPrefix => (format!("v{version}"), false),
                VersionChange::Inserted(i, s) => {
                    // Within the version, never at its end ("1.0.0.." would
                    // still be refused, "1.0.0 " too: both fine).
                    let i = 1 + i % (version.len() - 1).max(1);
                    (format!("{}{s}{}", &version[..i], &version[i..]), false)
                }
            };
            // A leading zero on "0.x" reads "00.x": refused all the same.
            let parsed = CrateVersion::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), expected, "{:?} from {:?}", raw, change);
            if let Ok(parsed) = parsed {
                prop_assert_eq!(parsed.as_str(), raw.as_str());
                prop_assert!(semver::Version::parse(parsed.as_str()).is_ok());
            }
            Ok(expected)
        },
    );
}

/// A download segment (name or version characters), each character sent as
/// is or percent-encoded in either case, then perhaps spoiled by an encoding
/// that must be refused.
fn encoded_segment() -> impl Strategy<Value = (String, String, bool)> {
    let plain = "[a-zA-Z0-9._+-]{1,30}";
    (
        plain,
        proptest::collection::vec(0u8..3, 30),
        prop_oneof![
            3 => Just(None),
            1 => (any::<usize>(), prop_oneof![Just("%2f"), Just("%2F"), Just("%00"), Just("%%"), Just("%zz"), Just("%ff"), Just("/"), Just("%20")])
                .prop_map(Some),
        ],
    )
        .prop_map(|(plain, how, spoil)| {
            let mut encoded = String::new();
            for (c, how) in plain.chars().zip(how.iter().cycle()) {
                match how {
                    0 => encoded.push(c),
                    1 => encoded.push_str(&format!("%{:02X}", c as u32)),
                    _ => encoded.push_str(&format!("%{:02x}", c as u32)),
                }
            }
            match spoil {
                None => (encoded, plain, true),
                Some((i, bad)) => {
                    // ("%%", not a lone "%": before two hex digits of the
                    // text a lone "%" would make a valid escape.)
                    // Only at a character boundary of the encoded text (not
                    // inside a %XX), so the spoiler stands on its own.
                    let bounds: Vec<usize> = (0..=encoded.len())
                        .filter(|&b| b == encoded.len() || !encoded[..b].ends_with('%') && !encoded[..b.saturating_sub(1)].ends_with('%'))
                        .collect();
                    let b = bounds[i % bounds.len()];
                    (format!("{}{bad}{}", &encoded[..b], &encoded[b..]), plain, false)
                }
            }
        })
}

#[test]
fn download_segments_decode_to_exactly_their_characters_or_are_refused() {
    run_counted(
        "download segments",
        encoded_segment(),
        |(raw, plain, expected)| {
            let decoded = decode_segment(&raw);
            prop_assert_eq!(decoded.is_ok(), expected, "{:?}: {:?}", raw, decoded);
            if let Ok(decoded) = decoded {
                prop_assert_eq!(decoded, plain);
            }
            Ok(expected)
        },
    );
}

#[derive(Debug, Clone)]
enum TokenChange {
    None,
    Bearer,
    /// One character replaced by another.
    Flip(usize, char),
    /// The last character dropped.
    Truncate,
    /// A character added at the end.
    Append(char),
    /// Upper-cased (tokens are case-sensitive).
    Upper,
    /// Bytes that are not UTF-8 around it.
    Binary(Vec<u8>),
}

fn token_change() -> impl Strategy<Value = TokenChange> {
    let hex = proptest::char::ranges(vec!['0'..='9', 'a'..='f'].into());
    prop_oneof![
        2 => Just(TokenChange::None),
        2 => Just(TokenChange::Bearer),
        1 => (any::<usize>(), hex.clone()).prop_map(|(i, c)| TokenChange::Flip(i, c)),
        1 => Just(TokenChange::Truncate),
        1 => hex.prop_map(TokenChange::Append),
        1 => Just(TokenChange::Upper),
        1 => proptest::collection::vec(0x80u8.., 1..4).prop_map(TokenChange::Binary),
    ]
}

#[test]
fn authorization_is_granted_for_the_token_and_nothing_near_it() {
    let (token, hash) = new_token().expect("a token");
    let set = TokenSet::new(vec![parse_token_hash(&hash).expect("its hash")]);
    run_counted("authorization headers", token_change(), |change| {
        let (raw, expected): (Vec<u8>, bool) = match &change {
            TokenChange::None => (token.clone().into_bytes(), true),
            TokenChange::Bearer => (format!("Bearer {token}").into_bytes(), true),
            TokenChange::Flip(i, c) => {
                // Past "cmt_": a hex digit changed to another.
                let i = 4 + i % (token.len() - 4);
                if token[i..].starts_with(*c) {
                    return Ok(set.check(Some(token.as_bytes())) == AuthCheck::Granted);
                }
                (
                    format!("{}{c}{}", &token[..i], &token[i + 1..]).into_bytes(),
                    false,
                )
            }
            TokenChange::Truncate => (token.as_bytes()[..token.len() - 1].to_vec(), false),
            TokenChange::Append(c) => (format!("{token}{c}").into_bytes(), false),
            TokenChange::Upper => (token.to_ascii_uppercase().into_bytes(), false),
            TokenChange::Binary(bytes) => {
                let mut raw = bytes.clone();
                raw.extend_from_slice(token.as_bytes());
                (raw, false)
            }
        };
        let check = set.check(Some(&raw));
        prop_assert_eq!(
            check == AuthCheck::Granted,
            expected,
            "{:?}: {:?}",
            change,
            check
        );
        if !expected {
            prop_assert_eq!(check, AuthCheck::Denied);
        }
        Ok(expected)
    });
}

proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: cases(), failure_persistence: None, ..Default::default() })]

    /// Arbitrary text and bytes, as a fuzzer would send: no panic anywhere.
    #[test]
    fn arbitrary_input_never_panics(raw in "\\PC{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_index_path(&raw);
        let _ = CrateName::parse(&raw);
        let _ = CrateVersion::parse(&raw);
        let _ = decode_segment(&raw);
        let _ = TokenSet::new(vec![[7u8; 32]]).check(Some(&bytes));
    }
}
