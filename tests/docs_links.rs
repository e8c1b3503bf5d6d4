//! The documentation's own links: every relative link in README.md and
//! docs/*.md names a file of the repository, and every `#anchor` a heading
//! of the file it points into, by GitHub's rule for heading anchors. The
//! README was split into docs/ by reader; a link left pointing at where a
//! section used to be fails here rather than on a reader.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file under docs/.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("a docs/ dir")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "docs/ holds Markdown files");
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks (a `# comment` in a shell
/// block is no heading, and `[x](y)` in code is no link).
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// `line` without its `code spans`.
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// GitHub's anchor for a heading's text: lowercased, punctuation dropped
/// (letters, digits, `-`, `_` and spaces kept), each space a `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings; a repeated one gets `-1`,
/// `-2`, ... as on GitHub.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    prose(text)
        .into_iter()
        .filter_map(|line| {
            let level = line.chars().take_while(|c| *c == '#').count();
            let rest = &line[level..];
            ((1..=6).contains(&level) && rest.starts_with(' '))
                .then(|| anchor(&rest.replace('`', "")))
        })
        .map(|base| {
            let n = seen.entry(base.clone()).or_insert(0);
            let unique = if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            *n += 1;
            unique
        })
        .collect()
}

/// The targets of the inline links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    found
}

/// What is wrong with `target`, linked from `from`, if anything.
fn check(from: &Path, target: &str) -> Option<String> {
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a document's dir").join(path)
    };
    if !file.exists() {
        return Some(format!("{target}: no file {}", file.display()));
    }
    let fragment = fragment?;
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Some(format!(
            "{target}: #{fragment} into a dir or unreadable file"
        ));
    };
    let known = anchors(&text);
    (!known.iter().any(|a| a == fragment)).then(|| {
        format!(
            "{target}: no heading #{fragment} in {} (its anchors: {known:?})",
            file.display()
        )
    })
}

#[test]
fn github_anchors_drop_punctuation_and_join_words_with_dashes() {
    assert_eq!(
        anchor("Backups, restore and upgrades"),
        "backups-restore-and-upgrades"
    );
    assert_eq!(anchor("Search and the web API"), "search-and-the-web-api");
    assert_eq!(
        anchors("# A\n\n```sh\n# not a heading\n```\n\n## A\n### `x` y.z\n"),
        ["a", "a-1", "x-yz"]
    );
    assert_eq!(
        links("see [a](b.md#c), `[d](e)` and [f](https://example.com)\n```\n[g](h)\n```\n"),
        ["b.md#c", "https://example.com"]
    );
}

#[test]
fn every_relative_link_in_the_docs_reaches_a_file_and_heading() {
    let mut broken = Vec::new();
    let (mut files, mut headings) = (0, 0);
    for document in documents() {
        let text = std::fs::read_to_string(&document).expect("read a document");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            files += 1;
            headings += usize::from(target.contains('#'));
            if let Some(problem) = check(&document, &target) {
                let name = document.strip_prefix(root()).unwrap_or(&document);
                broken.push(format!("{}: {problem}", name.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    // The README links into every part of docs/, by file and by heading: a
    // parser that found no links would pass the check above vacuously.
    assert!(
        files >= 10 && headings >= 10,
        "{files} links, {headings} with an anchor"
    );
}

#[test]
fn the_readme_links_every_document_in_docs() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let linked = links(&readme);
    for document in documents().iter().skip(1) {
        let name = document.file_name().expect("a file name").to_string_lossy();
        assert!(
            linked
                .iter()
                .any(|target| target.split('#').next() == Some(&format!("docs/{name}"))),
            "the README's map of the docs names docs/{name}"
        );
    }
}
