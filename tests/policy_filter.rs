//! The policy filter over the real-index fixture: a release cooldown at a
//! fixed instant, applied to all 626 real index files, holds back exactly
//! the versions published within the window (computed here apart from the
//! filter, by comparing the fixture's uniform `pubtime` strings), and leaves
//! every other line byte for byte as the upstream served it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate_mirror::policy::pubtime::parse_pubtime;
use crate_mirror::policy::{filter, CooldownMode, HeldReason, Policy};
use support::bench::real_index::unpack_index;

/// The day the fixture was taken.
const NOW: &str = "2026-11-25T00:00:00Z";
/// `NOW` less the cooldown, in the fixture's own `pubtime` form: a version
/// published after it is young. 90 days: a window with a couple of hundred
/// versions, a few of them yanked already.
const WINDOW_START: &str = "2026-08-27T00:00:00Z";
const COOLDOWN: Duration = Duration::from_secs(90 * 24 * 3600);

/// Every index file of the fixture: (path, body).
fn fixture_files() -> Vec<(String, Vec<u8>)> {
    let (_dir, root) = unpack_index();
    support::files_below(&root)
        .into_iter()
        .map(|path| {
            let body = std::fs::read(&path).expect("read an index file");
            (path.display().to_string(), body)
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct Line {
    name: String,
    vers: String,
    yanked: bool,
    pubtime: String,
}

fn read(line: &[u8]) -> Line {
    serde_json::from_slice(line).expect("a fixture line has name, vers, yanked and pubtime")
}

fn lines(body: &[u8]) -> Vec<&[u8]> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect()
}

fn run(mode: CooldownMode) {
    let files = fixture_files();
    assert_eq!(files.len(), 626, "the fixture's file count");
    let policy = Policy {
        min_release_age: COOLDOWN,
        mode,
        ..Policy::default()
    };
    let now = parse_pubtime(NOW).unwrap();
    let mut expected = BTreeSet::new();
    let mut held = BTreeSet::new();
    let mut earliest_young: Option<String> = None;
    let mut next_change = None;
    let mut young_and_yanked = 0;
    for (path, body) in &files {
        let out = filter(body, &policy, now);
        for h in &out.held {
            let HeldReason::Cooldown { published, until } = &h.reason else {
                panic!("{path}: {h:?} is not held by the cooldown");
            };
            assert_eq!(*until, *published + COOLDOWN);
            assert!(held.insert((h.name.clone(), h.version.clone())));
        }
        if let Some(at) = out.next_change {
            next_change = Some(next_change.map_or(at, |n: std::time::SystemTime| n.min(at)));
        }
        let served = lines(&out.body);
        let mut served = served.iter();
        for upstream in lines(body) {
            let record = read(upstream);
            // The fixture writes every pubtime as YYYY-MM-DDTHH:MM:SSZ, so
            // text order is time order.
            let young = record.pubtime.as_str() > WINDOW_START;
            // In mode yank, a young line already yanked is left as it is:
            // its coming of age changes nothing.
            if young && record.yanked {
                young_and_yanked += 1;
            }
            let held_here = young && (mode == CooldownMode::Hide || !record.yanked);
            if held_here {
                expected.insert((record.name.clone(), record.vers.clone()));
                if earliest_young
                    .as_deref()
                    .is_none_or(|e| record.pubtime.as_str() < e)
                {
                    earliest_young = Some(record.pubtime.clone());
                }
            }
            if held_here && mode == CooldownMode::Hide {
                continue;
            }
            let line = served
                .next()
                .unwrap_or_else(|| panic!("{path}: served body ends before {}", record.vers));
            let served_record = read(line);
            assert_eq!(served_record.vers, record.vers, "{path}: lines in order");
            if held_here {
                assert!(served_record.yanked, "{path} {}", record.vers);
                let marked = String::from_utf8_lossy(upstream)
                    .replace(r#""yanked": false"#, r#""yanked": true"#);
                assert_eq!(
                    String::from_utf8_lossy(line),
                    marked,
                    "{path}: only yanked changes"
                );
                let served_value: serde_json::Value = serde_json::from_slice(line).unwrap();
                let mut upstream_value: serde_json::Value =
                    serde_json::from_slice(upstream).unwrap();
                upstream_value["yanked"] = serde_json::Value::Bool(true);
                assert_eq!(served_value, upstream_value, "{path}: no field lost");
            } else {
                assert_eq!(line, &upstream, "{path} {}: byte for byte", record.vers);
            }
        }
        assert!(
            served.next().is_none(),
            "{path}: served lines beyond upstream's"
        );
        if out.held.is_empty() {
            assert_eq!(
                &*out.body,
                &body[..],
                "{path}: an untouched file is the same body"
            );
        }
    }
    assert!(
        young_and_yanked > 0,
        "the window holds versions yanked already"
    );
    assert!(
        expected.len() > 100,
        "the window must hold a real sample of versions, not {}",
        expected.len()
    );
    let wrong: Vec<_> = held.symmetric_difference(&expected).collect();
    assert!(
        wrong.is_empty(),
        "held back but not young, or young but not held back: {wrong:?}"
    );
    let earliest = parse_pubtime(&earliest_young.expect("young versions")).unwrap();
    assert_eq!(next_change, Some(earliest + COOLDOWN));
}

#[test]
fn a_cooldown_over_the_real_index_yanks_exactly_the_young_versions() {
    run(CooldownMode::Yank);
}

#[test]
fn a_cooldown_over_the_real_index_hides_exactly_the_young_versions() {
    run(CooldownMode::Hide);
}
