//! The command line (settings precedence, clear errors) and the health probes.

mod common;

use std::process::Command;

use common::mirror::Mirror;
use common::registry::CrateSpec;
use common::upstream::{DlStyle, TestUpstream};
use common::{client, json_of};

fn mirror_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crate-mirror"));
    for (key, _) in std::env::vars() {
        if key.starts_with("CRATE_MIRROR_") {
            command.env_remove(key);
        }
    }
    command
}

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
    ];
    for (args, env, expected) in cases {
        let mut command = mirror_command();
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
    let output = mirror_command().arg("serve").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`upstream` is required"));
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
            let mut command = mirror_command();
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

#[tokio::test]
async fn health_and_readiness() {
    let mut upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    let mirror = Mirror::start(&upstream.url, &[]);
    let health = client()
        .get(format!("{}/health", mirror.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client()
        .get(format!("{}/ready", mirror.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["ready"], true);
    assert_eq!(report["upstream_config_known"], true);

    // A mirror that never reached the upstream's config.json is alive but not ready.
    upstream.stop();
    let orphan = Mirror::start(&upstream.url, &[]);
    assert_eq!(
        client()
            .get(format!("{}/health", orphan.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = client()
        .get(format!("{}/ready", orphan.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["upstream_config_known"], false);
    assert_eq!(report["data_dir_writable"], true);
    assert_eq!(report["database_open"], true);
}

/// `workers` sets how many threads serve HTTP (actix names them `actix-rt|system…`).
#[tokio::test]
async fn workers_sets_the_number_of_http_threads() {
    let upstream = TestUpstream::start(&[CrateSpec::new("a", "1.0.0")], DlStyle::Plain);
    for workers in [1, 3] {
        let mirror = Mirror::start(&upstream.url, &["--workers", &workers.to_string()]);
        assert!(
            mirror.stats().await["requests"].is_object(),
            "the mirror serves"
        );
        let threads = std::fs::read_dir(format!("/proc/{}/task", mirror.pid()))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("actix-rt|system"))
            .count();
        assert_eq!(
            threads, workers,
            "HTTP worker threads with --workers {workers}"
        );
    }
}
