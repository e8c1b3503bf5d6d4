//! First-seen checksum pinning, as a pure function over one index file: the
//! checksum of the first line the mirror sees for a version is kept for good
//! (the caller stores it), and a later body that offers another `cksum` for
//! that version has that line refused.
//!
//! Only the checksum is kept, not the line: a pin costs a version's 64 hex
//! digits, where the lines would cost the plain index again (many times the
//! gzip'd files). On a refused rewrite the line served is taken from the
//! previous body of the file, what the cache stored last: that body was
//! pinned in its turn, so its line for the version carries the pinned
//! checksum, and nothing of the rewritten line (its dependencies included)
//! reaches a client. Only the new `yanked` value is applied to it — a
//! registry yanks a version it found bad, and that must get through. When
//! the previous body has no line for the version with the pinned checksum
//! (the version was removed and came back rewritten, or the record predates
//! the pin), the version is left out of the served body: refused all the
//! same. Every other line of the new body is taken as it comes (new
//! versions, yanks, backfilled fields of versions whose checksum did not
//! change). A refused version thus misses fields backfilled since: the safe
//! side.
//!
//! A pin is never updated nor dropped here: a version the upstream removed
//! is removed from what is served (a registry deletes malware that way) and
//! reported apart, and if it comes back with another checksum it is still
//! refused.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::edit::{edit_lines, set_yanked, Head, Verdict};

/// A version seen for the first time and the checksum it pins: what the
/// caller stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    version: String,
    cksum: String,
}

impl Pin {
    pub fn new(version: impl Into<String>, cksum: impl Into<String>) -> Self {
        Self {
            version: version.into(),
            cksum: cksum.into(),
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn cksum(&self) -> &str {
        &self.cksum
    }
}

/// A rewrite of a published version's checksum that pinning refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRewrite {
    pub name: String,
    pub version: String,
    /// The checksum first seen, still the one served (if the version is).
    pub pinned: String,
    /// The checksum the new body offered.
    pub offered: String,
}

/// The body to serve after pinning, and what the caller records and reports.
#[derive(Debug)]
pub struct Pinning<'a> {
    /// The new body itself when no line was refused.
    pub body: Cow<'a, [u8]>,
    /// Versions seen for the first time: to store, beside the index file.
    pub new_pins: Vec<Pin>,
    /// In the order of the body's lines.
    pub refused: Vec<RefusedRewrite>,
    /// Pinned versions the new body no longer has (and so are not served).
    pub removed: Vec<String>,
}

/// Pins a new upstream `body` of one index file against the `pins` known so
/// far (checksum by version, as the lines spell it), serving refused lines
/// from `previous`, the body stored last for that file. A line without a
/// name, version or checksum is served as it is and pins nothing: cargo
/// cannot use it, and the cache refuses such bodies from the upstream
/// before they get here.
pub fn pin<'a>(
    pins: &BTreeMap<String, String>,
    previous: Option<&[u8]>,
    body: &'a [u8],
) -> Pinning<'a> {
    let mut new_pins: Vec<Pin> = Vec::new();
    // Versions pinned by this body so far: a version listed twice is held
    // to its first line here too.
    let mut pinned_now: HashMap<String, usize> = HashMap::new();
    let mut refused = Vec::new();
    let mut present: HashSet<String> = HashSet::new();
    // Read only on a refusal, once: most bodies have none.
    let mut previous_lines: Option<HashMap<String, (String, &[u8])>> = None;
    let mut body_lines: Option<HashMap<String, (String, &[u8])>> = None;
    let served = edit_lines(body, |line| {
        let Some(head) = Head::read(line) else {
            return Verdict::Keep;
        };
        let Some(cksum) = head.cksum.as_deref() else {
            return Verdict::Keep;
        };
        present.insert(head.vers.to_string());
        let (pinned, source) = match pins.get(&*head.vers) {
            Some(pinned) => (
                pinned.as_str(),
                &*previous_lines
                    .get_or_insert_with(|| lines_by_version(previous.unwrap_or_default())),
            ),
            None => match pinned_now.get(&*head.vers) {
                Some(i) => (
                    new_pins[*i].cksum.as_str(),
                    &*body_lines.get_or_insert_with(|| lines_by_version(body)),
                ),
                None => {
                    pinned_now.insert(head.vers.to_string(), new_pins.len());
                    new_pins.push(Pin::new(head.vers.as_ref(), cksum));
                    return Verdict::Keep;
                }
            },
        };
        if pinned == cksum {
            return Verdict::Keep;
        }
        refused.push(RefusedRewrite {
            name: head.name.to_string(),
            version: head.vers.to_string(),
            pinned: pinned.to_string(),
            offered: cksum.to_string(),
        });
        // The pinned line, as served last; none: the version is not served.
        let Some(&(_, pinned_line)) = source
            .get(&*head.vers)
            .filter(|(served_cksum, _)| served_cksum == pinned)
        else {
            return Verdict::Remove;
        };
        let yanked = head.is_yanked();
        if Head::read(pinned_line).is_some_and(|old| old.is_yanked() == yanked) {
            return Verdict::Replace(pinned_line.to_vec());
        }
        match set_yanked(pinned_line, yanked) {
            Some(edited) => Verdict::Replace(edited),
            // A line that cannot be edited: the version is not served rather
            // than served with the wrong `yanked`.
            None => Verdict::Remove,
        }
    });
    let removed = pins
        .keys()
        .filter(|vers| !present.contains(vers.as_str()))
        .cloned()
        .collect();
    Pinning {
        body: served,
        new_pins,
        refused,
        removed,
    }
}

/// The first line of each version in `body`, with its checksum.
fn lines_by_version(body: &[u8]) -> HashMap<String, (String, &[u8])> {
    let mut lines = HashMap::new();
    for line in body.split(|b| *b == b'\n') {
        let Some(head) = Head::read(line) else {
            continue;
        };
        let Some(cksum) = head.cksum else {
            continue;
        };
        lines
            .entry(head.vers.into_owned())
            .or_insert_with(|| (cksum.into_owned(), line));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(vers: &str, cksum: char, yanked: bool, extra: &str) -> String {
        format!(
            r#"{{"name": "Foo", "vers": "{vers}", "deps": [], "cksum": "{}", "features": {{}}, "yanked": {yanked}{extra}}}"#,
            cksum.to_string().repeat(64)
        )
    }

    fn body(lines: &[&str]) -> Vec<u8> {
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    }

    /// The pins the first sight of `lines` leaves: checksum by version.
    fn pins_of(lines: &[&str]) -> BTreeMap<String, String> {
        let first = body(lines);
        pin(&BTreeMap::new(), None, &first)
            .new_pins
            .into_iter()
            .map(|pin| (pin.version, pin.cksum))
            .collect()
    }

    #[test]
    fn the_first_body_pins_every_version_and_is_served_as_it_is() {
        let a = line("1.0.0", 'a', false, "");
        let b = line("1.1.0", 'b', false, "");
        let input = body(&[&a, "not json", &b]);
        let out = pin(&BTreeMap::new(), None, &input);
        assert!(matches!(out.body, Cow::Borrowed(_)));
        let (ca, cb) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(
            out.new_pins,
            [
                Pin::new("1.0.0", ca.as_str()),
                Pin::new("1.1.0", cb.as_str())
            ]
        );
        assert!(out.refused.is_empty());
        assert!(out.removed.is_empty());
    }

    #[test]
    fn a_rewritten_checksum_is_refused_and_the_first_line_served() {
        let first = line("1.0.0", 'a', false, r#", "deps_note": "first""#);
        let kept = line("1.1.0", 'b', false, "");
        let pins = pins_of(&[&first, &kept]);
        let previous = body(&[&first, &kept]);
        let rewritten = line("1.0.0", 'e', false, r#", "deps_note": "evil""#);
        let backfilled = line("1.1.0", 'b', true, r#", "rust_version": "1.70""#);
        let new = line("1.2.0", 'c', false, "");
        let input = body(&[&rewritten, &backfilled, &new]);
        let out = pin(&pins, Some(&previous), &input);
        assert_eq!(*out.body, body(&[&first, &backfilled, &new])[..]);
        assert_eq!(
            out.refused,
            vec![RefusedRewrite {
                name: "Foo".into(),
                version: "1.0.0".into(),
                pinned: "a".repeat(64),
                offered: "e".repeat(64),
            }]
        );
        let new_pins: Vec<_> = out.new_pins.iter().map(Pin::version).collect();
        assert_eq!(new_pins, ["1.2.0"]);
        assert!(out.removed.is_empty());
    }

    #[test]
    fn a_refused_line_takes_the_new_yanked_value() {
        let first = line("1.0.0", 'a', false, "");
        let pins = pins_of(&[&first]);
        let input = body(&[&line("1.0.0", 'e', true, "")]);
        let out = pin(&pins, Some(&body(&[&first])), &input);
        assert_eq!(*out.body, body(&[&line("1.0.0", 'a', true, "")])[..]);
        assert_eq!(out.refused.len(), 1);
        // And back: an unyank gets through as well.
        let first = line("1.0.0", 'a', true, "");
        let input = body(&[&line("1.0.0", 'e', false, "")]);
        let out = pin(&pins_of(&[&first]), Some(&body(&[&first])), &input);
        assert_eq!(*out.body, body(&[&line("1.0.0", 'a', false, "")])[..]);
    }

    #[test]
    fn versions_removed_upstream_are_reported_and_not_served() {
        let a = line("1.0.0", 'a', false, "");
        let b = line("1.1.0", 'b', false, "");
        let pins = pins_of(&[&a, &b]);
        let input = body(&[&b]);
        let out = pin(&pins, Some(&body(&[&a, &b])), &input);
        assert_eq!(*out.body, body(&[&b])[..]);
        assert_eq!(out.removed, ["1.0.0"]);
        assert!(out.refused.is_empty());
        assert!(out.new_pins.is_empty());
        // Back with another checksum: still refused; the body stored last
        // no longer has its line, so it is not served at all.
        let previous = out.body.into_owned();
        let input = body(&[&line("1.0.0", 'e', false, ""), &b]);
        let out = pin(&pins, Some(&previous), &input);
        assert_eq!(*out.body, body(&[&b])[..]);
        assert_eq!(out.refused.len(), 1);
        assert!(out.new_pins.is_empty());
    }

    #[test]
    fn a_refused_version_without_its_pinned_line_before_is_left_out() {
        let a = line("1.0.0", 'a', false, "");
        let b = line("1.1.0", 'b', false, "");
        let pins = pins_of(&[&a, &b]);
        let input = body(&[&line("1.0.0", 'e', false, ""), &b]);
        // No body stored before, or one whose line for 1.0.0 carries another
        // checksum (written without pinning): neither line is served.
        let other = body(&[&line("1.0.0", 'f', false, ""), &b]);
        for previous in [None, Some(&other[..])] {
            let out = pin(&pins, previous, &input);
            assert_eq!(*out.body, body(&[&b])[..]);
            assert_eq!(out.refused.len(), 1);
            assert_eq!(out.refused[0].pinned, "a".repeat(64));
        }
    }

    #[test]
    fn a_version_listed_twice_is_held_to_its_first_line() {
        let a = line("1.0.0", 'a', false, "");
        let e = line("1.0.0", 'e', false, "");
        let input = body(&[&a, &e]);
        let out = pin(&BTreeMap::new(), None, &input);
        assert_eq!(*out.body, body(&[&a, &a])[..]);
        assert_eq!(out.new_pins.len(), 1);
        assert_eq!(out.refused.len(), 1);
    }
}
