//! The policy's vocabulary, each parsed from the text an operator writes:
//! `min-release-age` (a duration), `min-release-age-mode` (`yank` | `hide`),
//! and the crate rules of `release-age-exempt` and `deny` (`name` or
//! `name@<semver requirement>`). Errors say in one line what was expected;
//! the settings layer adds the key and where the value came from.

use std::fmt;
use std::time::Duration;

use semver::{Comparator, Op, Version, VersionReq};

use crate::names::CrateName;

/// The policy in force: what the filter applies to each index file.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Versions published less than this long ago are held back; zero: off.
    pub min_release_age: Duration,
    pub mode: CooldownMode,
    /// Versions the cooldown does not apply to (the deny list still does).
    pub exempt: Vec<CrateRule>,
    /// Versions never served.
    pub deny: Vec<CrateRule>,
}

impl Policy {
    /// Whether any rule can change a body: with none, the filter is skipped.
    pub fn is_active(&self) -> bool {
        !self.min_release_age.is_zero() || !self.deny.is_empty()
    }

    /// The deny rule that refuses `version` of crate `name`, if any.
    pub fn denied_by(&self, name: &str, version: &str) -> Option<&CrateRule> {
        let version = Version::parse(version).ok();
        self.deny
            .iter()
            .find(|rule| rule.denies(name, version.as_ref()))
    }

    /// Whether the cooldown skips `version` of crate `name`.
    pub fn is_exempt(&self, name: &str, version: &str) -> bool {
        let version = Version::parse(version).ok();
        self.exempt
            .iter()
            .any(|rule| rule.exempts(name, version.as_ref()))
    }
}

/// What the cooldown does to a young version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CooldownMode {
    /// Served with `"yanked": true`: new resolutions skip it, a Cargo.lock
    /// that already pins it keeps working (cargo's treatment of a yank).
    #[default]
    Yank,
    /// Not served at all, locked or not.
    Hide,
}

impl CooldownMode {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "yank" => Ok(Self::Yank),
            "hide" => Ok(Self::Hide),
            _ => Err("expected yank or hide".to_string()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yank => "yank",
            Self::Hide => "hide",
        }
    }
}

/// Longest `min-release-age` accepted: ten years. A larger one is a typo,
/// and an unbounded one would overflow the time arithmetic.
const MAX_RELEASE_AGE: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// Parses `min-release-age`: a whole number with a unit — `90m`, `72h`,
/// `3d`, `2w` (also `s`) — or `0` for off. A bare number other than 0 is
/// refused: minutes, hours and days are all plausible readings of it.
pub fn parse_min_release_age(value: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration like 90m, 72h, 3d or 2w, or 0 for off";
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let number: u64 = digits.parse().map_err(|_| EXPECTED.to_string())?;
    let unit_secs: u64 = match unit.trim() {
        "" if number == 0 => 0,
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        "w" => 7 * 24 * 3600,
        _ => return Err(EXPECTED.to_string()),
    };
    let age = number
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .filter(|age| *age <= MAX_RELEASE_AGE)
        .ok_or_else(|| "longer than ten years".to_string())?;
    Ok(age)
}

/// One entry of `release-age-exempt` or `deny`: a crate, and optionally a
/// semver requirement on its versions (`foo@<1.2.3`, `evil-crate`).
#[derive(Debug, Clone)]
pub struct CrateRule {
    /// The entry as written (trimmed): what logs and 403 bodies name.
    text: String,
    /// The crate, compared the way the registry compares names.
    key: String,
    /// `None`: every version, semver or not.
    req: Option<VersionReq>,
}

impl CrateRule {
    pub fn parse(entry: &str) -> Result<Self, String> {
        let text = entry.trim();
        let (name, req) = match text.split_once('@') {
            Some((name, req)) => (name.trim(), Some(req.trim())),
            None => (text, None),
        };
        if name.is_empty() {
            return Err(format!(
                "{text:?}: expected a crate name or name@requirement"
            ));
        }
        let name = CrateName::parse(name).map_err(|_| format!("{name:?} is not a crate name"))?;
        let req = match req {
            None => None,
            Some("") => return Err(format!("{text:?}: no version requirement after @")),
            Some(req) => Some(
                VersionReq::parse(req)
                    .map_err(|e| format!("{req:?} is not a version requirement: {e}"))?,
            ),
        };
        Ok(Self {
            text: text.to_string(),
            key: registry_key(name.as_str()),
            req,
        })
    }

    /// The entry as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn names(&self, name: &str) -> bool {
        registry_key(name) == self.key
    }

    /// Cargo's matching, pre-release rule included: an exemption is meant
    /// for a named fix, and must not let more through than its author read.
    fn exempts(&self, name: &str, version: Option<&Version>) -> bool {
        self.names(name)
            && match (&self.req, version) {
                (None, _) => true,
                (Some(req), Some(version)) => req.matches(version),
                (Some(_), None) => false,
            }
    }

    /// Like `exempts`, except that pre-releases are matched too: cargo's
    /// requirement `<1.2.3` leaves out `1.0.0-rc.1`, but a company that
    /// refuses every version below 1.2.3 refuses that one as well.
    fn denies(&self, name: &str, version: Option<&Version>) -> bool {
        self.names(name)
            && match (&self.req, version) {
                (None, _) => true,
                (Some(req), Some(version)) => matches_pre_releases_too(req, version),
                (Some(_), None) => false,
            }
    }
}

impl fmt::Display for CrateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The registry treats names that differ only in case, or in `-` against
/// `_`, as the same crate (it refuses to publish the second one).
fn registry_key(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

fn matches_pre_releases_too(req: &VersionReq, version: &Version) -> bool {
    if version.pre.is_empty() {
        return req.matches(version);
    }
    req.comparators
        .iter()
        .all(|comparator| includes(comparator, version))
}

/// Whether `comparator` includes the pre-release `version` by semver's
/// ordering. A bound with all three numbers is compared exactly; a partial
/// one (`<1.2`, `~1`, `^1.2`) is asked about the version's release, which
/// errs toward including a pre-release at the edge of a range.
fn includes(comparator: &Comparator, version: &Version) -> bool {
    if comparator.matches(version) {
        return true;
    }
    let bound = match (comparator.minor, comparator.patch) {
        (Some(minor), Some(patch)) => Some(Version {
            major: comparator.major,
            minor,
            patch,
            pre: comparator.pre.clone(),
            build: semver::BuildMetadata::EMPTY,
        }),
        _ => None,
    };
    let order = bound.map(|bound| version.cmp_precedence(&bound));
    match (comparator.op, order) {
        (Op::Exact, Some(order)) => order.is_eq(),
        (Op::Greater, Some(order)) => order.is_gt(),
        (Op::GreaterEq, Some(order)) => order.is_ge(),
        (Op::Less, Some(order)) => order.is_lt(),
        (Op::LessEq, Some(order)) => order.is_le(),
        _ => comparator.matches(&Version::new(version.major, version.minor, version.patch)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn release_age_takes_units_and_zero() {
        assert_eq!(parse_min_release_age("72h"), Ok(hours(72)));
        assert_eq!(parse_min_release_age(" 3d "), Ok(hours(72)));
        assert_eq!(parse_min_release_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_min_release_age("2w"), Ok(hours(336)));
        assert_eq!(parse_min_release_age("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_min_release_age("0"), Ok(Duration::ZERO));
        assert_eq!(parse_min_release_age("0d"), Ok(Duration::ZERO));
    }

    #[test]
    fn release_age_refuses_what_it_cannot_read() {
        let expected = "expected a duration like 90m, 72h, 3d or 2w, or 0 for off";
        for bad in ["", "72", "h", "3 days", "1.5h", "-3d", "3y", "72H", "3d4h"] {
            assert_eq!(
                parse_min_release_age(bad),
                Err(expected.to_string()),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_min_release_age("5000w"),
            Err("longer than ten years".to_string())
        );
        assert_eq!(
            parse_min_release_age("99999999999999999d"),
            Err("longer than ten years".to_string())
        );
    }

    #[test]
    fn mode_is_yank_or_hide() {
        assert_eq!(CooldownMode::default(), CooldownMode::Yank);
        assert_eq!(CooldownMode::parse("yank"), Ok(CooldownMode::Yank));
        assert_eq!(CooldownMode::parse(" Hide "), Ok(CooldownMode::Hide));
        assert_eq!(
            CooldownMode::parse("remove"),
            Err("expected yank or hide".to_string())
        );
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let err = |entry: &str| CrateRule::parse(entry).unwrap_err();
        assert_eq!(err(""), "\"\": expected a crate name or name@requirement");
        assert_eq!(
            err("@1.0"),
            "\"@1.0\": expected a crate name or name@requirement"
        );
        assert_eq!(err("foo@"), "\"foo@\": no version requirement after @");
        assert_eq!(err("1foo"), "\"1foo\" is not a crate name");
        assert_eq!(err("foo bar"), "\"foo bar\" is not a crate name");
        assert!(err("foo@<one").starts_with("\"<one\" is not a version requirement: "));
        assert!(err("foo@1.0@2").starts_with("\"1.0@2\" is not a version requirement"));
    }

    #[test]
    fn names_compare_as_the_registry_compares_them() {
        let rule = CrateRule::parse("Evil-Crate").unwrap();
        assert_eq!(rule.as_str(), "Evil-Crate");
        for name in ["evil-crate", "evil_crate", "EVIL_CRATE", "eViL-cRaTe"] {
            assert!(rule.denies(name, None), "{name}");
            assert!(rule.exempts(name, None), "{name}");
        }
        assert!(!rule.denies("evil-crates", None));
        assert!(!rule.denies("evilcrate", None));
    }

    #[test]
    fn requirements_match_versions() {
        let policy = Policy {
            deny: vec![CrateRule::parse(" foo @ <1.2.3 ").unwrap()],
            exempt: vec![CrateRule::parse("foo@=1.2.5").unwrap()],
            ..Policy::default()
        };
        assert_eq!(policy.deny[0].as_str(), "foo @ <1.2.3");
        assert!(policy.denied_by("foo", "1.2.2").is_some());
        assert!(policy.denied_by("Foo", "0.1.0+build.7").is_some());
        assert!(policy.denied_by("foo", "1.2.3").is_none());
        assert!(policy.denied_by("bar", "1.0.0").is_none());
        assert!(policy.is_exempt("foo", "1.2.5"));
        assert!(!policy.is_exempt("foo", "1.2.4"));
        assert!(!policy.is_exempt("bar", "1.2.5"));
    }

    #[test]
    fn deny_catches_pre_releases_that_cargo_would_leave_out() {
        let deny = |entry: &str, version: &str| {
            CrateRule::parse(entry)
                .unwrap()
                .denies("foo", Version::parse(version).ok().as_ref())
        };
        // Below the bound: a pre-release of an earlier or the same release.
        assert!(deny("foo@<1.2.3", "1.0.0-rc.1"));
        assert!(deny("foo@<1.2.3", "1.2.3-rc.1"));
        assert!(!deny("foo@<1.2.3", "1.2.4-rc.1"));
        assert!(deny("foo@<=1.2.3", "1.2.3-rc.1"));
        assert!(deny("foo@>1.2.3", "1.2.4-alpha"));
        assert!(!deny("foo@>1.2.3", "1.2.3-alpha"));
        assert!(deny("foo@>=1.2.3-beta", "1.2.3-rc.1"));
        assert!(deny("foo@=1.2.3-rc.1", "1.2.3-rc.1"));
        assert!(!deny("foo@=1.2.3", "1.2.3-rc.1"));
        // Partial bounds ask about the release.
        assert!(deny("foo@^1.2", "1.5.0-beta.2"));
        assert!(deny("foo@~1", "1.0.0-alpha"));
        assert!(!deny("foo@^1.2", "2.0.0-alpha"));
        // Every comparator must hold.
        assert!(deny("foo@>=1.0.0, <2.0.0", "1.5.0-beta"));
        assert!(!deny("foo@>=1.0.0, <2.0.0", "0.9.0-beta"));
    }

    #[test]
    fn exemptions_follow_cargo_for_pre_releases() {
        let exempt = |entry: &str, version: &str| {
            CrateRule::parse(entry)
                .unwrap()
                .exempts("foo", Version::parse(version).ok().as_ref())
        };
        assert!(exempt("foo@^1.2", "1.4.0"));
        assert!(!exempt("foo@^1.2", "1.5.0-beta.2"));
        assert!(exempt("foo@=1.5.0-beta.2", "1.5.0-beta.2"));
    }

    #[test]
    fn non_semver_versions_only_match_bare_names() {
        let policy = Policy {
            deny: vec![
                CrateRule::parse("foo@*").unwrap(),
                CrateRule::parse("bar").unwrap(),
            ],
            exempt: vec![
                CrateRule::parse("foo@>=0.0.0").unwrap(),
                CrateRule::parse("bar").unwrap(),
            ],
            ..Policy::default()
        };
        assert!(policy.denied_by("foo", "1.0").is_none());
        assert!(policy.denied_by("foo", "1.0.0").is_some());
        assert!(!policy.is_exempt("foo", "latest"));
        assert_eq!(policy.denied_by("bar", "1.0").unwrap().as_str(), "bar");
        assert!(policy.is_exempt("bar", "latest"));
    }

    #[test]
    fn an_empty_policy_is_inactive() {
        assert!(!Policy::default().is_active());
        let exempt_only = Policy {
            exempt: vec![CrateRule::parse("foo").unwrap()],
            ..Policy::default()
        };
        assert!(!exempt_only.is_active());
        let cooldown = Policy {
            min_release_age: hours(1),
            ..Policy::default()
        };
        assert!(cooldown.is_active());
        let deny = Policy {
            deny: vec![CrateRule::parse("foo").unwrap()],
            ..Policy::default()
        };
        assert!(deny.is_active());
    }
}
