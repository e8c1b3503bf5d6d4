//! The command line from the outside, with the real binary: on/off settings
//! in every form from flag, environment and file; each subcommand taking (and
//! its `--help` listing) only the settings it uses; every flag the docs
//! name accepted where they use it; and the one-line errors of
//! `import` and `export`.

use std::process::Output;

use crate_mirror::config::{CommandName, Kind, SETTINGS};

use support::mirror::{Mirror, NO_UPSTREAM};

fn run(args: &[&str]) -> Output {
    support::mirror::command().args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The long flags `SUBCOMMAND --help` lists.
fn listed_flags(subcommand: &str) -> Vec<String> {
    let output = run(&[subcommand, "--help"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim_start)
        .filter_map(|line| line.strip_prefix("-h, ").or(Some(line)))
        .filter(|line| line.starts_with("--"))
        .map(|line| line.split([' ', '=', '[', '<']).next().unwrap().to_string())
        .collect()
}

/// `--offline` alone, with a word after `=` or a space, from the environment
/// and from the file: every form turns the mirror offline, which it reports
/// in `/api/stats`; a flag's `false` beats the environment's `on`.
#[tokio::test]
async fn an_on_off_setting_means_the_same_from_flag_environment_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let toml_bool = file("bool.toml", "offline = true\n");
    let toml_word = file("word.toml", "offline = \"on\"\n");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, bool);
    let cases: Vec<Case> = vec![
        (vec!["--offline"], vec![], true),
        (vec!["--offline=on"], vec![], true),
        (vec!["--offline=yes"], vec![], true),
        (vec!["--offline", "true"], vec![], true),
        (vec!["--offline", "1"], vec![], true),
        (vec![], vec![("CRATE_MIRROR_OFFLINE", "on")], true),
        (vec![], vec![("CRATE_MIRROR_OFFLINE", "TRUE")], true),
        (vec!["--config", &toml_bool], vec![], true),
        (vec!["--config", &toml_word], vec![], true),
        (
            vec!["--offline=false"],
            vec![("CRATE_MIRROR_OFFLINE", "on")],
            false,
        ),
        (vec!["--offline", "off"], vec![], false),
        (vec![], vec![], false),
    ];
    for (args, env, offline) in cases {
        let mirror = Mirror::builder(NO_UPSTREAM).args(&args).envs(&env).start();
        let stats: serde_json::Value = mirror.get("/api/stats").await.json().await.unwrap();
        assert_eq!(stats["offline"], offline, "{args:?} {env:?}");
    }
}

/// Every on/off setting, for every command that takes it: alone, and with
/// each word, the flag is read (the run stops at our own check of a later
/// setting, a `crate-mirror:` line, never at clap's `error:`).
#[test]
fn every_on_off_flag_stands_alone_or_takes_a_word() {
    let data = tempfile::tempdir().unwrap();
    let data = data.path().to_str().unwrap();
    for setting in SETTINGS {
        let about = setting.about();
        if about.kind != Kind::Bool {
            continue;
        }
        for command in CommandName::ALL {
            if !about.commands.contains(command) {
                continue;
            }
            let flag = format!("--{}", about.key);
            for form in [flag.clone(), format!("{flag}=on"), format!("{flag}=false")] {
                let mut args = vec![command.as_str(), &form, "--data-dir", data];
                // Stops every command before it does anything.
                args.extend(["--log-format", "nope", "--upstream", NO_UPSTREAM]);
                if command == CommandName::Import {
                    args.retain(|arg| !["--upstream", NO_UPSTREAM].contains(arg));
                    args.push("missing.tar.gz");
                }
                if command == CommandName::Export {
                    args.extend(["--out", "unused.tar.gz"]);
                }
                let output = run(&args);
                let said = stderr(&output);
                assert!(said.starts_with("crate-mirror: "), "{args:?}: {said}");
                assert_ne!(output.status.code(), Some(0), "{args:?}");
            }
        }
    }
}

/// `SUBCOMMAND --help` lists exactly the settings the definitions give that
/// subcommand: `gc` has no `--upstream` and no server flag.
#[test]
fn each_command_lists_only_the_settings_it_uses() {
    for command in CommandName::ALL {
        let listed = listed_flags(command.as_str());
        for setting in SETTINGS {
            let about = setting.about();
            let flag = format!("--{}", about.key);
            assert_eq!(
                listed.contains(&flag),
                about.commands.contains(command),
                "{} --help and {flag}: {listed:?}",
                command.as_str()
            );
        }
    }
    let gc = listed_flags("gc");
    for serve_only in ["--upstream", "--listen", "--workers", "--public-url"] {
        assert!(!gc.iter().any(|flag| flag == serve_only), "{gc:?}");
    }
    assert!(gc.iter().any(|flag| flag == "--max-storage"), "{gc:?}");
    // A flag a command would ignore is refused.
    let output = run(&["gc", "--upstream", NO_UPSTREAM]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--upstream"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn gc_runs_without_an_upstream() {
    let data = tempfile::tempdir().unwrap();
    let output = support::mirror::command()
        .arg("gc")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--max-storage", "1GiB"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("evicted 0 crates"),
        "{output:?}"
    );
}

/// The S3 settings that are no secret are flags too, for every command
/// that opens storage; the keys are not (they would show in `ps`).
#[test]
fn aws_region_is_a_flag() {
    for command in ["serve", "verify", "export"] {
        let mut args = vec![
            command,
            "--aws-region",
            "eu-west-1",
            "--upstream",
            NO_UPSTREAM,
        ];
        // Stops each before it does anything, at our check, not clap's.
        args.extend(["--log-format", "nope"]);
        if command == "export" {
            args.extend(["--out", "unused.tar.gz"]);
        }
        let said = stderr(&run(&args));
        assert!(
            said.starts_with("crate-mirror: invalid value \"nope\" for `log-format`"),
            "{command}: {said}"
        );
    }
    let output = run(&["import", "--aws-region=eu-west-1", "missing.tar.gz"]);
    assert!(stderr(&output).starts_with("crate-mirror: missing.tar.gz"));
    let output = run(&["serve", "--aws-secret-access-key", "x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unexpected argument"));
}

/// Every `crate-mirror SUBCOMMAND ...` line of the examples in the README and
/// docs/: each `--flag` on it is one that subcommand lists. And the docs'
/// claim that every setting but the S3 keys is a flag: of some command.
#[test]
fn every_flag_the_docs_name_is_accepted_where_they_use_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path);
        }
    }
    let text: String = pages
        .iter()
        .map(|page| std::fs::read_to_string(page).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut lines = text.lines();
    let mut checked = 0;
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("crate-mirror ") else {
            continue;
        };
        let mut text = rest.to_string();
        while text.trim_end().ends_with('\\') {
            text.push(' ');
            text.push_str(lines.next().unwrap_or_default());
        }
        let text = text.split('#').next().unwrap();
        let subcommand = text.split_whitespace().next().unwrap();
        let listed = listed_flags(subcommand);
        for word in text.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = format!("--{}", flag.split('=').next().unwrap());
                assert!(
                    listed.contains(&flag),
                    "the docs run `crate-mirror {subcommand}` with {flag}: {line}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} flags found in the docs");
    let all: Vec<String> = CommandName::ALL
        .iter()
        .flat_map(|command| listed_flags(command.as_str()))
        .collect();
    for setting in SETTINGS {
        let about = setting.about();
        let flag = format!("--{}", about.key);
        let is_key = about.secret && about.key.starts_with("aws-");
        assert_eq!(all.contains(&flag), !is_key, "{flag}");
    }
}

/// A bundle that is not there: one line saying so once, exit 1, and no
/// data dir made.
#[test]
fn import_of_a_missing_bundle_says_so_once_and_creates_nothing() {
    let work = tempfile::tempdir().unwrap();
    let output = support::mirror::command()
        .current_dir(work.path())
        .args(["import", "missing.tar.gz", "--data-dir", "./d2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "crate-mirror: missing.tar.gz: No such file or directory (os error 2); nothing was imported\n"
    );
    assert!(!work.path().join("d2").exists());
}

/// `export` from a data dir with no upstream names the flags that give it a
/// source: `--from` (a running mirror) and `--upstream` with its variable.
#[test]
fn export_without_a_source_names_from_and_upstream() {
    let work = tempfile::tempdir().unwrap();
    let output = support::mirror::command()
        .current_dir(work.path())
        .args(["export", "--crate", "serde", "--out", "x.tar.gz"])
        .args(["--data-dir", "./d3"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let said = stderr(&output);
    assert_eq!(said.lines().count(), 1, "{said}");
    for part in [
        "--from URL",
        "--upstream URL",
        "CRATE_MIRROR_UPSTREAM",
        "--offline",
    ] {
        assert!(said.contains(part), "{part}: {said}");
    }
    assert!(!work.path().join("d3").exists());
}
