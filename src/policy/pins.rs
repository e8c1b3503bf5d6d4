//! First-seen checksum pinning, as a pure function over one index file: the
//! first line the mirror sees for a version is kept for good (the caller
//! stores it), and a later body that offers another `cksum` for that
//! version has that line refused.
//!
//! What is kept is the whole first-seen line, not only its checksum: on a
//! refused rewrite the mirror serves the line it served before, so nothing
//! of the rewritten line (its dependencies included) reaches a client. Only
//! the new `yanked` value is applied to it — a registry yanks a version it
//! found bad, and that must get through. Every other line of the new body is
//! taken as it comes (new versions, yanks, backfilled fields of versions
//! whose checksum did not change). A refused version thus misses fields
//! backfilled after its first sight: the safe side.
//!
//! A pin is never updated nor dropped here: a version the upstream removed
//! is removed from what is served (a registry deletes malware that way) and
//! reported apart, and if it comes back with another checksum it is still
//! refused.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::edit::{edit_lines, set_yanked, Head, Verdict};

/// The first line seen for one version, and the checksum it pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedLine {
    version: String,
    cksum: String,
    yanked: bool,
    line: Vec<u8>,
}

impl PinnedLine {
    /// Reads a line (one index line, without its `\n`), as stored or as the
    /// upstream sent it; `None` when it names no version or checksum.
    pub fn from_line(line: &[u8]) -> Option<Self> {
        let head = Head::read(line)?;
        Some(Self {
            yanked: head.is_yanked(),
            version: head.vers.into_owned(),
            cksum: head.cksum?.into_owned(),
            line: line.to_vec(),
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn cksum(&self) -> &str {
        &self.cksum
    }

    /// The line, byte for byte as first seen: what the caller stores.
    pub fn line(&self) -> &[u8] {
        &self.line
    }
}

/// A rewrite of a published version's checksum that pinning refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRewrite {
    pub name: String,
    pub version: String,
    /// The checksum first seen, still served.
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
    pub new_pins: Vec<PinnedLine>,
    /// In the order of the body's lines.
    pub refused: Vec<RefusedRewrite>,
    /// Pinned versions the new body no longer has (and so are not served).
    pub removed: Vec<String>,
}

/// Pins a new upstream body of one index file against the `pins` known so
/// far (by version, as the lines spell it). A line without a name, version
/// or checksum is served as it is and pins nothing: cargo cannot use it, and
/// the cache refuses such bodies from the upstream before they get here.
pub fn pin<'a>(pins: &BTreeMap<String, PinnedLine>, body: &'a [u8]) -> Pinning<'a> {
    let mut new_pins: Vec<PinnedLine> = Vec::new();
    // Versions pinned by this body so far: a version listed twice is held
    // to its first line here too.
    let mut pinned_now: HashMap<String, usize> = HashMap::new();
    let mut refused = Vec::new();
    let mut present: HashSet<String> = HashSet::new();
    let body = edit_lines(body, |line| {
        let Some(head) = Head::read(line) else {
            return Verdict::Keep;
        };
        let Some(cksum) = head.cksum.as_deref() else {
            return Verdict::Keep;
        };
        present.insert(head.vers.to_string());
        let known = pins
            .get(&*head.vers)
            .or_else(|| pinned_now.get(&*head.vers).map(|i| &new_pins[*i]));
        let Some(pinned) = known else {
            if let Some(pin) = PinnedLine::from_line(line) {
                pinned_now.insert(pin.version.clone(), new_pins.len());
                new_pins.push(pin);
            }
            return Verdict::Keep;
        };
        if pinned.cksum == cksum {
            return Verdict::Keep;
        }
        refused.push(RefusedRewrite {
            name: head.name.to_string(),
            version: head.vers.to_string(),
            pinned: pinned.cksum.clone(),
            offered: cksum.to_string(),
        });
        let yanked = head.is_yanked();
        if yanked == pinned.yanked {
            return Verdict::Replace(pinned.line.clone());
        }
        match set_yanked(&pinned.line, yanked) {
            Some(edited) => Verdict::Replace(edited),
            // A stored line that cannot be edited: the version is not served
            // rather than served with the wrong `yanked`.
            None => Verdict::Remove,
        }
    });
    let removed = pins
        .keys()
        .filter(|vers| !present.contains(vers.as_str()))
        .cloned()
        .collect();
    Pinning {
        body,
        new_pins,
        refused,
        removed,
    }
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

    fn pins_of(lines: &[&str]) -> BTreeMap<String, PinnedLine> {
        lines
            .iter()
            .map(|l| {
                let pin = PinnedLine::from_line(l.as_bytes()).unwrap();
                (pin.version().to_string(), pin)
            })
            .collect()
    }

    #[test]
    fn the_first_body_pins_every_version_and_is_served_as_it_is() {
        let a = line("1.0.0", 'a', false, "");
        let b = line("1.1.0", 'b', false, "");
        let input = body(&[&a, "not json", &b]);
        let out = pin(&BTreeMap::new(), &input);
        assert!(matches!(out.body, Cow::Borrowed(_)));
        let pinned: Vec<_> = out
            .new_pins
            .iter()
            .map(|p| (p.version(), p.cksum(), p.line()))
            .collect();
        let (ca, cb) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(
            pinned,
            [
                ("1.0.0", ca.as_str(), a.as_bytes()),
                ("1.1.0", cb.as_str(), b.as_bytes())
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
        let rewritten = line("1.0.0", 'e', false, r#", "deps_note": "evil""#);
        let backfilled = line("1.1.0", 'b', true, r#", "rust_version": "1.70""#);
        let new = line("1.2.0", 'c', false, "");
        let input = body(&[&rewritten, &backfilled, &new]);
        let out = pin(&pins, &input);
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
        let new_pins: Vec<_> = out.new_pins.iter().map(PinnedLine::version).collect();
        assert_eq!(new_pins, ["1.2.0"]);
        assert!(out.removed.is_empty());
    }

    #[test]
    fn a_refused_line_takes_the_new_yanked_value() {
        let first = line("1.0.0", 'a', false, "");
        let pins = pins_of(&[&first]);
        let input = body(&[&line("1.0.0", 'e', true, "")]);
        let out = pin(&pins, &input);
        assert_eq!(*out.body, body(&[&line("1.0.0", 'a', true, "")])[..]);
        assert_eq!(out.refused.len(), 1);
        // And back: an unyank gets through as well.
        let first = line("1.0.0", 'a', true, "");
        let input = body(&[&line("1.0.0", 'e', false, "")]);
        let out = pin(&pins_of(&[&first]), &input);
        assert_eq!(*out.body, body(&[&line("1.0.0", 'a', false, "")])[..]);
    }

    #[test]
    fn versions_removed_upstream_are_reported_and_not_served() {
        let a = line("1.0.0", 'a', false, "");
        let b = line("1.1.0", 'b', false, "");
        let pins = pins_of(&[&a, &b]);
        let input = body(&[&b]);
        let out = pin(&pins, &input);
        assert_eq!(*out.body, body(&[&b])[..]);
        assert_eq!(out.removed, ["1.0.0"]);
        assert!(out.refused.is_empty());
        assert!(out.new_pins.is_empty());
        // Back with another checksum: still refused.
        let input = body(&[&line("1.0.0", 'e', false, ""), &b]);
        let out = pin(&pins, &input);
        assert_eq!(*out.body, body(&[&a, &b])[..]);
        assert_eq!(out.refused.len(), 1);
    }

    #[test]
    fn a_version_listed_twice_is_held_to_its_first_line() {
        let a = line("1.0.0", 'a', false, "");
        let e = line("1.0.0", 'e', false, "");
        let input = body(&[&a, &e]);
        let out = pin(&BTreeMap::new(), &input);
        assert_eq!(*out.body, body(&[&a, &a])[..]);
        assert_eq!(out.new_pins.len(), 1);
        assert_eq!(out.refused.len(), 1);
    }
}
