//! The settings from the outside: the settings table (docs/operating.md)
//! against the definitions, `--help`, precedence of the layers, and the
//! one-line errors (exit code 2) of the real binary.

use crate_mirror::config::{CommandName, Fallback, SETTINGS};

use support::mirror::{Mirror, NO_UPSTREAM};
use support::registry::CrateSpec;
use support::upstream::{DlStyle, TestUpstream};
use support::{client, json_of};

#[test]
fn wrong_values_are_one_line_errors_naming_the_key() {
    let temp = tempfile::tempdir().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--index-ttl", "soon"], vec![], "`index-ttl`"),
        (
            vec![],
            vec![("CRATE_MIRROR_LISTEN", "nowhere")],
            "CRATE_MIRROR_LISTEN",
        ),
        (vec!["--upstream", "not a url"], vec![], "`upstream`"),
        (vec!["--hot-cache-size", "lots"], vec![], "`hot-cache-size`"),
        (vec!["--git-index", "on"], vec![], "needs --public-url"),
        (vec!["--storage", "s3://x"], vec![], "`storage`"),
        (
            vec!["--max-storage", "1GiB", "--storage", "s3://bucket"],
            vec![],
            "`max-storage`",
        ),
        // A bare switch: reaching the check at all shows it was read.
        (vec!["--s3-redirect"], vec![], "`s3-redirect`"),
        // A negative number is a value for our parser, not an unknown flag.
        (
            vec!["--index-ttl", "-1"],
            vec![],
            "for `index-ttl` (from command line): expected a whole number of seconds",
        ),
        (
            vec!["--upstream", "registry.example.com/index/"],
            vec![],
            "for `upstream` (from command line): no scheme: expected an http:// or https:// URL, e.g. \"https://registry.example.com/index/\"",
        ),
        (
            vec!["--listen", "localhost:http"],
            vec![],
            "expected ADDRESS:PORT, HOST:PORT or a port",
        ),
    ];
    for (args, env, expected) in cases {
        let mut command = support::mirror::command();
        command.arg("serve").arg("--data-dir").arg(temp.path());
        if !args.contains(&"--upstream") {
            command.args(["--upstream", "http://127.0.0.1:9/index/"]);
        }
        let output = command.args(&args).envs(env).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"));
    }
}

#[test]
fn a_missing_upstream_names_its_flag_and_variable_once() {
    let temp = tempfile::tempdir().unwrap();
    let output = support::mirror::command()
        .arg("serve")
        .arg("--data-dir")
        .arg(temp.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "crate-mirror: `upstream` is required: pass --upstream URL, set CRATE_MIRROR_UPSTREAM, or put it in the config file\n"
    );
}

#[tokio::test]
async fn flags_beat_environment_beat_config_file() {
    let upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("mirror.toml");
    std::fs::write(
        &file,
        format!(
            "upstream = \"{}\"\npublic-url = \"http://file.example.com\"\nindex-ttl = 1\n",
            upstream.url
        ),
    )
    .unwrap();
    let dl = |args: Vec<String>, env: Vec<(&'static str, &'static str)>| {
        let file = file.clone();
        async move {
            let data = tempfile::tempdir().unwrap();
            let mut command = support::mirror::command();
            command
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--config"])
                .arg(&file)
                .arg("--data-dir")
                .arg(data.path())
                .args(args)
                .envs(env)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null());
            let mut child = command.spawn().unwrap();
            let stdout = child.stdout.take().unwrap();
            let line = std::io::BufRead::lines(std::io::BufReader::new(stdout))
                .next()
                .unwrap()
                .unwrap();
            let url = line
                .strip_prefix("crate-mirror listening on ")
                .unwrap()
                .to_string();
            let config = json_of(client().get(format!("{url}/index/config.json"))).await;
            let _ = child.kill();
            let _ = child.wait();
            config["dl"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(
        dl(vec![], vec![]).await,
        "http://file.example.com/api/v1/crates"
    );
    assert_eq!(
        dl(
            vec![],
            vec![("CRATE_MIRROR_PUBLIC_URL", "http://env.example.com")]
        )
        .await,
        "http://env.example.com/api/v1/crates"
    );
    assert_eq!(
        dl(
            vec!["--public-url".into(), "http://flag.example.com".into()],
            vec![("CRATE_MIRROR_PUBLIC_URL", "http://env.example.com")]
        )
        .await,
        "http://flag.example.com/api/v1/crates"
    );
}

/// The rows of the settings table (docs/operating.md): (key, default) as written.
fn readme_rows() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operating.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Settings\n"))
        .expect("a \"## Settings\" section");
    let mut table = section.lines().filter(|line| line.starts_with('|'));
    assert_eq!(table.next(), Some("| key | default | meaning |"));
    assert_eq!(table.next(), Some("| --- | --- | --- |"));
    table
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            assert!(cells.len() >= 3, "not a table row: {row}");
            let key = cells[0].trim_start_matches("| ");
            let key = key
                .strip_prefix('`')
                .and_then(|k| k.strip_suffix('`'))
                .unwrap_or_else(|| panic!("the key is not `code`: {row}"));
            (key.to_string(), cells[1].to_string())
        })
        .collect()
}

#[test]
fn the_readme_table_lists_every_setting_once_with_its_default() {
    let rows = readme_rows();
    for setting in SETTINGS {
        let about = setting.about();
        let matching: Vec<&(String, String)> =
            rows.iter().filter(|(key, _)| key == about.key).collect();
        assert_eq!(matching.len(), 1, "`{}` rows in the README", about.key);
        let expected = match about.fallback {
            Fallback::Value(value) => format!("`{value}`"),
            Fallback::Absent(_) | Fallback::Required => about.fallback_text().to_string(),
        };
        assert_eq!(matching[0].1, expected, "default of `{}`", about.key);
    }
    for (key, _) in &rows {
        assert!(
            SETTINGS.iter().any(|s| s.about().key == key),
            "the README lists `{key}`, which is no setting"
        );
    }
}

#[test]
fn help_shows_every_flag_with_its_default() {
    let output = support::mirror::command()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    // Each option's entry: its flag line and the help lines up to the next flag.
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines().map(str::trim) {
        match entries.last_mut() {
            Some(entry) if !line.starts_with('-') => entry.push_str(&format!(" {line}")),
            _ => entries.push(line.to_string()),
        }
    }
    for setting in SETTINGS {
        let about = setting.about();
        let flag = format!("--{}", about.key);
        let entry = entries
            .iter()
            .find(|entry| entry.split([' ', '[']).next() == Some(flag.as_str()));
        if !about.commands.contains(CommandName::Serve) {
            assert!(entry.is_none(), "{flag} is shown: {help}");
            continue;
        }
        let entry = entry.unwrap_or_else(|| panic!("{flag} is missing: {help}"));
        let shown = match about.fallback {
            Fallback::Required => "(required)".to_string(),
            Fallback::Value(_) | Fallback::Absent(_) => {
                format!("[default: {}]", about.fallback_text())
            }
        };
        assert!(entry.ends_with(&shown), "{entry}");
    }
}

#[test]
fn unknown_mirror_variables_are_warned_about_naming_the_closest_setting() {
    let env = [("CRATE_MIRROR_INDEX_TLL".to_string(), "5".to_string())];
    // The mirror still starts: the warning is one line before it listens.
    let mirror = Mirror::builder(NO_UPSTREAM).envs(&env).start();
    let log = mirror.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("CRATE_MIRROR_INDEX_TLL"))
        .collect();
    assert_eq!(
        warnings,
        ["crate-mirror: warning: unknown environment variable CRATE_MIRROR_INDEX_TLL is ignored; the closest setting is CRATE_MIRROR_INDEX_TTL"],
        "{log}"
    );
}

#[tokio::test]
async fn listen_takes_a_host_name_or_a_bare_port_on_loopback() {
    for (listen, expected_prefix) in [("0", "http://127.0.0.1:"), ("localhost:0", "http://")] {
        let mirror = Mirror::builder(NO_UPSTREAM)
            .args(&["--listen", listen])
            .start();
        assert!(mirror.url.starts_with(expected_prefix), "{}", mirror.url);
        let addr: std::net::SocketAddr = mirror.url["http://".len()..].parse().unwrap();
        assert!(addr.ip().is_loopback(), "{listen}: {addr}");
        let health = mirror.get("/health").await;
        assert_eq!(health.status(), 200, "{listen}");
    }
}

/// The first thing an operator reads: one log line naming the version, the
/// address, the upstream, the public URL, the data dir, the storage and the
/// mode, and no secret.
#[test]
fn one_start_line_says_what_is_running() {
    let (token, hash) = support::cargo::new_token();
    let upstream = TestUpstream::start(&[CrateSpec::new("abc", "1.0.0")], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .private(&hash)
        .args(&["--max-storage", "1GiB"])
        .start();
    let line = start_line(&mirror);
    for part in [
        format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        format!("listen={}", mirror.url),
        format!("upstream=\"{}\"", upstream.url),
        format!("public_url=\"{}\"", mirror.url),
        format!("data_dir=\"{}\"", mirror.data_dir.display()),
        "storage=\"local, quota 1073741824 bytes\"".to_string(),
        "mode=\"private\"".to_string(),
        "proxy=\"none\"".to_string(),
    ] {
        assert!(line.contains(&part), "{part} not in {line}");
    }
    assert!(!line.contains(&token) && !line.contains(&hash), "{line}");
    assert_eq!(mirror.log().matches("crate-mirror started").count(), 1);
}

/// The mirror's start line. It is written once the socket listens, and the
/// log writer is asynchronous, so this waits for it (bounded).
fn start_line(mirror: &Mirror) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(line) = mirror
            .log()
            .lines()
            .find(|l| l.contains("crate-mirror started"))
        {
            return line.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "{}", mirror.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every interface with no tokens is said at start (a cloud VM's public
/// address makes the mirror everyone's); loopback or private mode is not.
#[test]
fn every_interface_in_public_mode_is_warned_about_at_start() {
    let (_, hash) = support::cargo::new_token();
    for (listen, tokens, warned) in [
        ("0.0.0.0:0", "", true),
        ("127.0.0.1:0", "", false),
        ("0.0.0.0:0", hash.as_str(), false),
    ] {
        let mut args = vec!["--listen", listen];
        if !tokens.is_empty() {
            args.extend([
                "--auth-tokens",
                tokens,
                "--public-url",
                "http://127.0.0.1:9",
            ]);
        }
        let mirror = Mirror::builder(NO_UPSTREAM).args(&args).start();
        start_line(&mirror);
        // The warning follows the start line in the same callback.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let log = mirror.log();
        assert_eq!(
            log.contains("listening on every interface in public mode"),
            warned,
            "{listen} tokens={tokens:?}: {log}"
        );
    }
}
