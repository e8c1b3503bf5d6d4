//! Applying the policy to one index file: denied versions are removed, young
//! versions (the release cooldown) are served as yanked or removed, every
//! other line goes out byte for byte as it came. The filter also says what
//! it held back and when the clock alone would next change its output, so
//! the cache computes the served body once per upstream change and once per
//! coming-of-age, and changes the ETag then.

use std::borrow::Cow;
use std::time::SystemTime;

use super::edit::{edit_lines, set_yanked, Head, Verdict};
use super::pubtime::parse_pubtime;
use super::rules::{CooldownMode, Policy};

/// The body to serve and what the policy took out of it.
#[derive(Debug)]
pub struct Filtered<'a> {
    /// The upstream body itself when nothing was held back.
    pub body: Cow<'a, [u8]>,
    /// In the order of the file's lines.
    pub held: Vec<Held>,
    /// The earliest instant at which a held-back version comes of age: the
    /// output changes then without any upstream change. `None`: it changes
    /// only when the body or the policy does.
    pub next_change: Option<SystemTime>,
}

/// One version the policy held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// As the line spells it.
    pub name: String,
    pub version: String,
    pub reason: HeldReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldReason {
    /// Younger than `min-release-age`: served as yanked (mode `yank`) or not
    /// at all (mode `hide`) until `until`.
    Cooldown {
        published: SystemTime,
        until: SystemTime,
    },
    /// Refused by the deny rule written as `rule`: never served.
    Deny { rule: String },
}

impl HeldReason {
    /// `cooldown` or `deny`: the metric label and the API's word.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Cooldown { .. } => "cooldown",
            Self::Deny { .. } => "deny",
        }
    }
}

/// Applies `policy` at `now` to an index file body (lines of JSON, each
/// ending in `\n` but perhaps the last). A line that does not name a crate
/// and a version is served as it is: cargo cannot read it either, and the
/// cache refuses such bodies from the upstream before they get here. A line
/// without a readable `pubtime` is not subject to the cooldown.
pub fn filter<'a>(body: &'a [u8], policy: &Policy, now: SystemTime) -> Filtered<'a> {
    let mut held = Vec::new();
    let mut next_change: Option<SystemTime> = None;
    let body = edit_lines(body, |line| match Head::read(line) {
        Some(head) => judge(line, &head, policy, now, &mut held, &mut next_change),
        None => Verdict::Keep,
    });
    Filtered {
        body,
        held,
        next_change,
    }
}

fn judge(
    line: &[u8],
    head: &Head,
    policy: &Policy,
    now: SystemTime,
    held: &mut Vec<Held>,
    next_change: &mut Option<SystemTime>,
) -> Verdict {
    let mut hold = |reason| {
        held.push(Held {
            name: head.name.to_string(),
            version: head.vers.to_string(),
            reason,
        })
    };
    if let Some(rule) = policy.denied_by(&head.name, &head.vers) {
        hold(HeldReason::Deny {
            rule: rule.as_str().to_string(),
        });
        return Verdict::Remove;
    }
    if policy.min_release_age.is_zero() {
        return Verdict::Keep;
    }
    let Some(published) = head
        .pubtime
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .and_then(|text| parse_pubtime(text).ok())
    else {
        return Verdict::Keep;
    };
    let Some(until) = published.checked_add(policy.min_release_age) else {
        return Verdict::Keep;
    };
    // Of age from `until` on, that instant included.
    if now >= until || policy.is_exempt(&head.name, &head.vers) {
        return Verdict::Keep;
    }
    let already_yanked = head.is_yanked();
    let verdict = match policy.mode {
        // Coming of age changes nothing for a line already yanked.
        CooldownMode::Yank if already_yanked => return Verdict::Keep,
        CooldownMode::Yank => match set_yanked(line, true) {
            Some(edited) => Verdict::Replace(edited),
            // A line that cannot be marked is not served until of age.
            None => Verdict::Remove,
        },
        CooldownMode::Hide => Verdict::Remove,
    };
    hold(HeldReason::Cooldown { published, until });
    *next_change = Some(next_change.map_or(until, |next| next.min(until)));
    verdict
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::policy::pubtime::parse_pubtime;
    use crate::policy::rules::CrateRule;

    const HOUR: Duration = Duration::from_secs(3600);

    fn time(text: &str) -> SystemTime {
        parse_pubtime(text).unwrap()
    }

    /// A line in the fixture's spacing, with a field the mirror does not know.
    fn line(name: &str, vers: &str, yanked: bool, pubtime: Option<&str>) -> String {
        let pubtime = pubtime.map_or(String::new(), |t| format!(r#", "pubtime": "{t}""#));
        format!(
            r#"{{"name": "{name}", "vers": "{vers}", "deps": [], "cksum": "{}", "features": {{}}, "yanked": {yanked}, "future_field": {{"x": [1, "}}"]}}{pubtime}}}"#,
            "a".repeat(64)
        )
    }

    fn body(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn cooldown(age: Duration, mode: CooldownMode) -> Policy {
        Policy {
            min_release_age: age,
            mode,
            ..Policy::default()
        }
    }

    fn lines_of(body: &[u8]) -> Vec<&str> {
        std::str::from_utf8(body).unwrap().lines().collect()
    }

    fn value(line: &str) -> serde_json::Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn yank_mode_marks_young_versions_and_keeps_every_other_byte() {
        let old = line("foo", "1.0.0", false, Some("2026-11-01T00:00:00Z"));
        let young = line("foo", "1.1.0", false, Some("2026-11-22T23:00:39Z"));
        let input = body(&[old.clone(), young.clone()]);
        let now = time("2026-11-23T12:00:00Z");
        let out = filter(&input, &cooldown(72 * HOUR, CooldownMode::Yank), now);
        let lines = lines_of(&out.body);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], old, "an old line goes out byte for byte");
        // Only the value changed: same length less "false" plus "true".
        assert_eq!(
            lines[1],
            young.replace(r#""yanked": false"#, r#""yanked": true"#)
        );
        let served = value(lines[1]);
        let upstream = value(&young);
        assert_eq!(served["yanked"], true);
        assert_eq!(served["future_field"], upstream["future_field"]);
        assert!(out.body.ends_with(b"}\n"));
        let until = time("2026-11-25T23:00:39Z");
        assert_eq!(
            out.held,
            vec![Held {
                name: "foo".into(),
                version: "1.1.0".into(),
                reason: HeldReason::Cooldown {
                    published: time("2026-11-22T23:00:39Z"),
                    until,
                },
            }]
        );
        assert_eq!(out.next_change, Some(until));
    }

    #[test]
    fn hide_mode_removes_young_versions() {
        let old = line("foo", "1.0.0", false, Some("2026-11-01T00:00:00Z"));
        let young = line("foo", "1.1.0", false, Some("2026-11-22T23:00:39Z"));
        let last = line("foo", "1.0.1", false, Some("2026-11-02T00:00:00Z"));
        let input = body(&[old.clone(), young, last.clone()]);
        let now = time("2026-11-23T12:00:00Z");
        let out = filter(&input, &cooldown(72 * HOUR, CooldownMode::Hide), now);
        assert_eq!(*out.body, body(&[old, last])[..]);
        assert_eq!(out.held.len(), 1);
        assert_eq!(out.held[0].reason.as_str(), "cooldown");
    }

    #[test]
    fn a_version_comes_of_age_at_the_exact_instant() {
        let young = line("foo", "1.1.0", false, Some("2026-11-22T23:00:39Z"));
        let input = body(&[young]);
        let policy = cooldown(72 * HOUR, CooldownMode::Hide);
        let until = time("2026-11-25T23:00:39Z");
        let before = filter(&input, &policy, until - Duration::from_nanos(1));
        assert!(before.body.is_empty());
        assert_eq!(before.next_change, Some(until));
        let at = filter(&input, &policy, until);
        assert!(matches!(at.body, Cow::Borrowed(_)));
        assert_eq!(*at.body, input[..]);
        assert!(at.held.is_empty());
        assert_eq!(at.next_change, None);
    }

    #[test]
    fn the_next_change_is_the_earliest_coming_of_age() {
        let input = body(&[
            line("foo", "1.0.0", false, Some("2026-11-22T10:00:00Z")),
            line("foo", "1.1.0", false, Some("2026-11-22T08:00:00Z")),
            line("foo", "1.2.0", false, Some("2026-11-22T09:00:00Z")),
            line("foo", "0.9.0", false, Some("2026-11-01T09:00:00Z")),
        ]);
        let out = filter(
            &input,
            &cooldown(24 * HOUR, CooldownMode::Yank),
            time("2026-11-22T12:00:00Z"),
        );
        assert_eq!(out.held.len(), 3);
        assert_eq!(out.next_change, Some(time("2026-11-23T08:00:00Z")));
    }

    #[test]
    fn lines_without_a_readable_pubtime_pass() {
        let input = body(&[
            line("foo", "1.0.0", false, None),
            line("foo", "1.1.0", false, Some("yesterday")),
            r#"{"name":"foo","vers":"1.2.0","cksum":"","pubtime":1795388439}"#.to_string(),
        ]);
        let out = filter(
            &input,
            &cooldown(1_000 * 24 * HOUR, CooldownMode::Hide),
            time("2026-11-23T12:00:00Z"),
        );
        assert!(matches!(out.body, Cow::Borrowed(_)));
        assert!(out.held.is_empty());
    }

    #[test]
    fn a_young_line_already_yanked_is_left_alone_in_yank_mode_only() {
        let input = body(&[line("foo", "1.1.0", true, Some("2026-11-22T23:00:39Z"))]);
        let now = time("2026-11-23T00:00:00Z");
        let yank = filter(&input, &cooldown(72 * HOUR, CooldownMode::Yank), now);
        assert!(matches!(yank.body, Cow::Borrowed(_)));
        assert!(yank.held.is_empty(), "coming of age changes nothing");
        assert_eq!(yank.next_change, None);
        let hide = filter(&input, &cooldown(72 * HOUR, CooldownMode::Hide), now);
        assert!(hide.body.is_empty());
        assert_eq!(hide.held.len(), 1);
        assert_eq!(hide.next_change, Some(time("2026-11-25T23:00:39Z")));
    }

    #[test]
    fn a_line_without_yanked_gets_one() {
        let input =
            br#"{"name":"foo","vers":"1.1.0","cksum":"c","pubtime":"2026-11-22T23:00:39Z"}"#;
        let out = filter(
            input,
            &cooldown(HOUR, CooldownMode::Yank),
            time("2026-11-22T23:30:00Z"),
        );
        assert_eq!(
            *out.body,
            br#"{"name":"foo","vers":"1.1.0","cksum":"c","pubtime":"2026-11-22T23:00:39Z","yanked":true}"#[..]
        );
    }

    #[test]
    fn a_young_line_that_cannot_be_marked_is_not_served() {
        // Cargo reads the escaped key as `yanked`; the edit refuses it.
        let input = br#"{"name":"foo","vers":"1.1.0","yank\u0065d":false,"pubtime":"2026-11-22T23:00:39Z"}"#;
        let out = filter(
            input,
            &cooldown(HOUR, CooldownMode::Yank),
            time("2026-11-22T23:30:00Z"),
        );
        assert!(out.body.is_empty());
        assert_eq!(out.held.len(), 1);
    }

    #[test]
    fn a_line_cargo_cannot_read_passes_as_it_is() {
        // A field written twice: cargo's reading of the line fails as ours
        // does, so no client can use the version whatever is served.
        let input = br#"{"name":"foo","vers":"1.1.0","yanked":false,"yanked":false,"pubtime":"2026-11-22T23:00:39Z"}"#;
        let out = filter(
            input,
            &cooldown(HOUR, CooldownMode::Yank),
            time("2026-11-22T23:30:00Z"),
        );
        assert!(matches!(out.body, Cow::Borrowed(_)));
        assert!(out.held.is_empty());
    }

    #[test]
    fn exemptions_skip_the_cooldown() {
        let input = body(&[
            line("Foo_Bar", "1.1.0", false, Some("2026-11-22T23:00:39Z")),
            line("Foo_Bar", "1.2.0", false, Some("2026-11-22T23:00:39Z")),
            line("Foo_Bar", "1.2.1", false, Some("2026-11-22T23:00:39Z")),
        ]);
        let policy = Policy {
            exempt: vec![CrateRule::parse("foo-bar@~1.2").unwrap()],
            ..cooldown(72 * HOUR, CooldownMode::Hide)
        };
        let out = filter(&input, &policy, time("2026-11-23T00:00:00Z"));
        let held: Vec<_> = out.held.iter().map(|h| h.version.as_str()).collect();
        assert_eq!(held, ["1.1.0"]);
        assert_eq!(lines_of(&out.body).len(), 2);
    }

    #[test]
    fn deny_removes_versions_with_no_cooldown_and_wins_over_exemptions() {
        let old = |vers| line("evil_crate", vers, false, Some("2020-01-01T00:00:00Z"));
        let input = body(&[old("1.0.0"), old("1.2.3"), old("2.0.0"), old("0.1")]);
        let policy = Policy {
            deny: vec![
                CrateRule::parse("Evil-Crate@<1.2.3").unwrap(),
                CrateRule::parse("evil-crate@>=2").unwrap(),
            ],
            exempt: vec![CrateRule::parse("evil-crate").unwrap()],
            ..Policy::default()
        };
        let out = filter(&input, &policy, time("2026-11-23T00:00:00Z"));
        assert_eq!(*out.body, body(&[old("1.2.3"), old("0.1")])[..]);
        assert_eq!(
            out.held,
            vec![
                Held {
                    name: "evil_crate".into(),
                    version: "1.0.0".into(),
                    reason: HeldReason::Deny {
                        rule: "Evil-Crate@<1.2.3".into()
                    },
                },
                Held {
                    name: "evil_crate".into(),
                    version: "2.0.0".into(),
                    reason: HeldReason::Deny {
                        rule: "evil-crate@>=2".into()
                    },
                },
            ]
        );
        assert_eq!(out.next_change, None, "a deny never comes of age");
    }

    #[test]
    fn escapes_do_not_hide_a_line_from_the_rules() {
        // Cargo decodes the escapes: this is evil 1.0.0, checksum and all.
        let input = br#"{"name":"evi\u006c","vers":"1.0\u002e0","cksum":"\u0061","yanked":false}"#;
        let policy = Policy {
            deny: vec![CrateRule::parse("evil@1").unwrap()],
            ..Policy::default()
        };
        let out = filter(input, &policy, UNIX_EPOCH);
        assert!(out.body.is_empty());
        assert_eq!(out.held[0].name, "evil");
        assert_eq!(out.held[0].version, "1.0.0");
    }

    #[test]
    fn a_bare_name_denies_non_semver_versions_too() {
        let input = body(&[line("evil", "0.1", false, None)]);
        let policy = Policy {
            deny: vec![CrateRule::parse("evil").unwrap()],
            ..Policy::default()
        };
        assert!(filter(&input, &policy, UNIX_EPOCH).body.is_empty());
    }

    #[test]
    fn unreadable_lines_and_line_endings_pass_byte_for_byte() {
        let young = line("foo", "1.1.0", false, Some("2026-11-22T23:00:39Z"));
        let input = format!("not json\r\n\n{young}\r\n{{\"vers\":\"1.0.0\"}}");
        let out = filter(
            input.as_bytes(),
            &cooldown(HOUR, CooldownMode::Hide),
            time("2026-11-22T23:30:00Z"),
        );
        assert_eq!(*out.body, b"not json\r\n\n{\"vers\":\"1.0.0\"}"[..]);
        let out = filter(
            input.as_bytes(),
            &cooldown(HOUR, CooldownMode::Yank),
            time("2026-11-22T23:30:00Z"),
        );
        let marked = young.replace(r#""yanked": false"#, r#""yanked": true"#);
        assert_eq!(
            String::from_utf8(out.body.into_owned()).unwrap(),
            format!("not json\r\n\n{marked}\r\n{{\"vers\":\"1.0.0\"}}")
        );
    }

    #[test]
    fn an_inactive_policy_borrows_the_body() {
        let input = body(&[line("foo", "1.1.0", false, Some("2026-11-22T23:00:39Z"))]);
        let out = filter(&input, &Policy::default(), time("2026-11-22T23:30:00Z"));
        assert!(matches!(out.body, Cow::Borrowed(_)));
        assert!(out.held.is_empty());
    }
}
