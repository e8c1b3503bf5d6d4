//! Editing an index body line by line without re-serialising anything: a
//! line the policy does not change goes out byte for byte, and a line it
//! marks yanked keeps its field order, its spacing and every field the
//! mirror does not know (cargo reads fields newer than the mirror). Only the
//! value of the top-level `yanked` changes, or `"yanked":true` is added when
//! there is none; the result is parsed again to prove it says what was meant.

use std::borrow::Cow;

/// What happens to one line of a body.
pub(super) enum Verdict {
    Keep,
    Replace(Vec<u8>),
    Remove,
}

/// The body with each line (without its `\n`) judged by `judge`: kept,
/// replaced (its line ending kept) or removed with its line ending. Nothing
/// is copied until a line differs: the common case borrows the body.
pub(super) fn edit_lines(body: &[u8], mut judge: impl FnMut(&[u8]) -> Verdict) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut start = 0;
    for piece in body.split_inclusive(|b| *b == b'\n') {
        let piece_start = start;
        start += piece.len();
        let line = piece.strip_suffix(b"\n").unwrap_or(piece);
        let verdict = judge(line);
        if matches!(verdict, Verdict::Keep) {
            continue;
        }
        let out = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
        out.extend_from_slice(&body[copied..piece_start]);
        copied = start;
        if let Verdict::Replace(edited) = verdict {
            out.extend_from_slice(&edited);
            out.extend_from_slice(&piece[line.len()..]);
        }
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&body[copied..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(body),
    }
}

/// The fields of a line the policy reads. Lenient beyond `name` and `vers`
/// (and escapes decoded, as cargo decodes them): a field of an unexpected
/// type must not make a line escape the rules.
#[derive(serde::Deserialize)]
pub(super) struct Head<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub vers: Cow<'a, str>,
    #[serde(default, borrow)]
    pub cksum: Option<Cow<'a, str>>,
    #[serde(default)]
    pub yanked: Option<serde_json::Value>,
    #[serde(default)]
    pub pubtime: Option<serde_json::Value>,
}

impl<'a> Head<'a> {
    /// `None` for a line that names no crate and version: cargo cannot read
    /// it either.
    pub fn read(line: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(line).ok()
    }

    /// Whether `yanked` says true (absent, `null` or anything else: no).
    pub fn is_yanked(&self) -> bool {
        self.yanked == Some(serde_json::Value::Bool(true))
    }
}

/// The line with its top-level `yanked` set to `yanked`; `None` when the line
/// cannot be edited safely (not one JSON object, `yanked` written twice or
/// with escapes): the caller then must not serve the line as it was.
pub(super) fn set_yanked(line: &[u8], yanked: bool) -> Option<Vec<u8>> {
    let object = top_level_fields(line)?;
    // An escaped key could spell `yanked` where the bytes do not.
    if object
        .fields
        .iter()
        .any(|field| line[field.key.clone()].contains(&b'\\'))
    {
        return None;
    }
    let occurrences: Vec<_> = object
        .fields
        .iter()
        .filter(|field| &line[field.key.clone()] == b"yanked")
        .collect();
    let value = if yanked { &b"true"[..] } else { &b"false"[..] };
    let edited = match occurrences.as_slice() {
        [field] => [&line[..field.value.start], value, &line[field.value.end..]].concat(),
        [] => {
            let separator: &[u8] = if object.fields.is_empty() { b"" } else { b"," };
            [
                &line[..object.close],
                separator,
                &b"\"yanked\":"[..],
                value,
                &line[object.close..],
            ]
            .concat()
        }
        _ => return None,
    };
    says_yanked(&edited, yanked).then_some(edited)
}

/// Whether `line` parses as a JSON object whose `yanked` is `yanked`.
fn says_yanked(line: &[u8], yanked: bool) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line)
        .is_ok_and(|object| object.get("yanked") == Some(&serde_json::Value::Bool(yanked)))
}

/// Where the members of a JSON object line are, as byte ranges.
struct Object {
    fields: Vec<Field>,
    /// The offset of the closing `}`.
    close: usize,
}

struct Field {
    /// Inside the quotes, raw (escapes not decoded).
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

fn top_level_fields(line: &[u8]) -> Option<Object> {
    let mut at = skip_space(line, 0);
    if line.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(line, at + 1);
    let mut fields = Vec::new();
    if line.get(at) == Some(&b'}') {
        return Some(Object { fields, close: at });
    }
    loop {
        if line.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(line, at)?;
        let key = at + 1..key_end - 1;
        at = skip_space(line, key_end);
        if line.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_space(line, at + 1);
        let value_end = skip_value(line, value_start)?;
        fields.push(Field {
            key,
            value: value_start..value_end,
        });
        at = skip_space(line, value_end);
        match line.get(at) {
            Some(b',') => at = skip_space(line, at + 1),
            Some(b'}') => return Some(Object { fields, close: at }),
            _ => return None,
        }
    }
}

fn skip_space(line: &[u8], mut at: usize) -> usize {
    while matches!(line.get(at), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        at += 1;
    }
    at
}

/// The offset just past the string that starts (with `"`) at `at`.
fn skip_string(line: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match line.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The offset just past the value that starts at `at`. Nested objects and
/// arrays are skipped by counting brackets outside strings; whether the
/// value is valid JSON is left to the parse of the edited line.
fn skip_value(line: &[u8], at: usize) -> Option<usize> {
    match line.get(at)? {
        b'"' => skip_string(line, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match line.get(i)? {
                    b'"' => {
                        i = skip_string(line, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let end = line[at..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .map_or(line.len(), |n| at + n);
            (end > at).then_some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yank(line: &str) -> Option<String> {
        set_yanked(line.as_bytes(), true).map(|l| String::from_utf8(l).unwrap())
    }

    #[test]
    fn changes_only_the_value() {
        assert_eq!(
            yank(r#"{"name":"a","vers":"1.0.0","yanked":false,"z":{"yanked":false}}"#).as_deref(),
            Some(r#"{"name":"a","vers":"1.0.0","yanked":true,"z":{"yanked":false}}"#)
        );
        assert_eq!(
            yank(r#"{"deps": [{"name": "x", "req": "}]\"yanked\""}], "yanked" :  false , "v": 2}"#)
                .as_deref(),
            Some(r#"{"deps": [{"name": "x", "req": "}]\"yanked\""}], "yanked" :  true , "v": 2}"#)
        );
        assert_eq!(
            yank(r#"{"vers":"1.0.0","yanked":null}"#).as_deref(),
            Some(r#"{"vers":"1.0.0","yanked":true}"#)
        );
        assert_eq!(
            set_yanked(br#"{"yanked":true}"#, false).as_deref(),
            Some(&br#"{"yanked":false}"#[..])
        );
    }

    #[test]
    fn adds_the_field_when_absent() {
        assert_eq!(
            yank(r#"{"name":"a","vers":"1.0.0"} "#).as_deref(),
            Some(r#"{"name":"a","vers":"1.0.0","yanked":true} "#)
        );
        assert_eq!(yank("{ }").as_deref(), Some(r#"{ "yanked":true}"#));
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        for bad in [
            "",
            "[]",
            r#"{"yanked":false,"yanked":false}"#,
            r#"{"yank\u0065d":false}"#,
            r#"{"yanked":false"#,
            r#"{"yanked":}"#,
            r#"{"yanked":false}}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":"\"}"#,
            "{\"a\":\"\\",
        ] {
            assert_eq!(yank(bad), None, "{bad}");
        }
    }
}
