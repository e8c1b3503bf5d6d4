//! Private mode: real cargo with a token through `cargo:token`, refusals that
//! reveal nothing, git with basic auth, open probes, a separate metrics token.

mod common;

use std::path::Path;
use std::process::Command;

use common::cargo::project;
use common::mirror::Mirror;
use common::registry::{graph_project_manifest, graph_registry};
use common::upstream::{DlStyle, TestUpstream};
use common::{client, json_of};
use reqwest::StatusCode;

/// A new token and its hash, from `crate-mirror token`.
fn new_token() -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
        .arg("token")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (field("token:"), field("hash:"))
}

/// A CARGO_HOME that reaches the mirror as a named registry with `cargo:token`.
fn private_home(index_url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[registries.mirror]\nindex = \"sparse+{index_url}\"\n\n[source.crates-io]\nreplace-with = \"mirror\"\n\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n[net]\nretry = 0\n"
        ),
    )
    .unwrap();
    dir
}

fn cargo_with_token(
    home: &Path,
    project: &Path,
    target: &Path,
    token: Option<&str>,
) -> std::process::Output {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .arg("generate-lockfile")
        .current_dir(project)
        .env("CARGO_HOME", home)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO_REGISTRIES_MIRROR_TOKEN");
    if let Some(token) = token {
        command.env("CARGO_REGISTRIES_MIRROR_TOKEN", token);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn cargo_with_a_token_resolves_and_without_one_gets_nothing() {
    let (token, hash) = new_token();
    let (other_token, other_hash) = new_token();
    assert_ne!(token, other_token);
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let tokens = format!("{hash},{other_hash}");
    let mirror = Mirror::start(&upstream.url, &["--auth-tokens", &tokens]);
    let home = private_home(&mirror.index_url());
    let target = tempfile::tempdir().unwrap();

    let app = project(&graph_project_manifest());
    let ok = cargo_with_token(home.path(), app.path(), target.path(), Some(&token));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(std::fs::read_to_string(app.path().join("Cargo.lock"))
        .unwrap()
        .contains("MixedCase"));
    // The second configured token works too, for downloads as well.
    let fetch = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .arg("fetch")
        .current_dir(app.path())
        .env("CARGO_HOME", home.path())
        .env("CARGO_TARGET_DIR", target.path())
        .env("CARGO_REGISTRIES_MIRROR_TOKEN", &other_token)
        .output()
        .unwrap();
    assert!(
        fetch.status.success(),
        "{}",
        String::from_utf8_lossy(&fetch.stderr)
    );

    for (token, expected) in [(None, "401"), (Some("cmt_wrong"), "403")] {
        let fresh_home = private_home(&mirror.index_url());
        let app = project(&graph_project_manifest());
        let refused = cargo_with_token(fresh_home.path(), app.path(), target.path(), token);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "cargo succeeded with {token:?}");
        assert!(
            stderr.contains(expected) || stderr.contains("token") || stderr.contains("authenticat"),
            "{token:?}: {stderr}"
        );
        assert!(!app.path().join("Cargo.lock").exists());
    }
}

#[tokio::test]
async fn refusals_reveal_nothing_and_probes_stay_open() {
    let (token, hash) = new_token();
    let (metrics_token, metrics_hash) = new_token();
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::start_with_git(
        &upstream.url,
        &[
            "--auth-tokens",
            &hash,
            "--metrics-tokens",
            &metrics_hash,
            "--git-rebuild-delay",
            "0",
        ],
    );
    let http = client();
    let secret_index = upstream.index_body("abc").unwrap();

    // config.json: a challenge without a token, auth-required with one.
    let challenge = http
        .get(format!("{}config.json", mirror.index_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.headers()["www-authenticate"],
        format!("Cargo login_url=\"{}/\"", mirror.url).as_str()
    );
    let config = json_of(
        http.get(format!("{}config.json", mirror.index_url()))
            .header("authorization", &token),
    )
    .await;
    assert_eq!(config["auth-required"], true);

    // Cache abc with the token, then ask without or with a wrong one.
    let granted = http
        .get(format!("{}3/a/abc", mirror.index_url()))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(granted.text().await.unwrap(), secret_index);
    let paths = [
        format!("{}3/a/abc", mirror.index_url()),
        format!("{}/api/v1/crates/abc/1.0.0/download", mirror.url),
        format!("{}/info/refs?service=git-upload-pack", mirror.git_url()),
    ];
    for path in &paths {
        for (header, status) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("cmt_wrong"), StatusCode::FORBIDDEN),
            (Some(metrics_token.as_str()), StatusCode::FORBIDDEN),
            (Some("Bearer "), StatusCode::FORBIDDEN),
        ] {
            let mut request = http.get(path);
            if let Some(value) = header {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), status, "{path} with {header:?}");
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("cksum") && !body.contains("abc"),
                "{path} leaked: {body}"
            );
        }
    }
    let git_challenge = http.get(&paths[2]).send().await.unwrap();
    assert_eq!(
        git_challenge.headers()["www-authenticate"],
        "Basic realm=\"crate-mirror\""
    );

    // git with the token as a basic-auth password.
    mirror
        .wait_for_git_files_authorized(2, Some(&metrics_token))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let with_token = mirror.git_url().replace("://", &format!("://git:{token}@"));
    let clone = Command::new("git")
        .args(["clone", "--quiet", &with_token, "index"])
        .current_dir(dir.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        clone.status.success(),
        "{}",
        String::from_utf8_lossy(&clone.stderr)
    );
    assert!(dir.path().join("index/3/a/abc").exists());
    let anonymous = Command::new("git")
        .args(["clone", "--quiet", &mirror.git_url(), "anonymous"])
        .current_dir(dir.path())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(!anonymous.status.success());

    // Probes and the dashboard page stay open; metrics need the metrics token.
    for open in ["/health", "/ready", "/"] {
        let response = http
            .get(format!("{}{open}", mirror.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{open}");
    }
    for guarded in ["/metrics", "/api/stats"] {
        let url = format!("{}{guarded}", mirror.url);
        assert_eq!(
            http.get(&url).send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        let wrong = http
            .get(&url)
            .header("authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
        let right = http
            .get(&url)
            .header("authorization", format!("Bearer {metrics_token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), StatusCode::OK, "{guarded}");
    }
}

#[test]
fn public_mirrors_need_no_token_and_tokens_are_hashes() {
    let (_, hash) = new_token();
    assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64);
    let output = Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:9/",
            "--auth-tokens",
            "not-a-hash",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`auth-tokens`"));
}
