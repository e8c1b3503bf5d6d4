//! Private mode: real cargo with a token through `cargo:token`, refusals that
//! reveal nothing, git with basic auth, open probes, a separate metrics token.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use support::cargo::{new_token, project};
use support::mirror::Mirror;
use support::registry::{graph_project_manifest, graph_registry};
use support::upstream::{DlStyle, TestUpstream};
use support::{client, json_of};

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

/// `cargo SUBCOMMAND` in `project`, with `token` as the mirror's token or none.
fn cargo_with_token(
    subcommand: &str,
    home: &Path,
    project: &Path,
    target: &Path,
    token: Option<&str>,
) -> std::process::Output {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .arg(subcommand)
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
    let mirror = Mirror::builder(&upstream.url).private(&tokens).start();
    let home = private_home(&mirror.index_url());
    let target = tempfile::tempdir().unwrap();
    let cargo = |subcommand: &str, home: &Path, app: &Path, token: Option<&str>| {
        cargo_with_token(subcommand, home, app, target.path(), token)
    };

    let app = project(&graph_project_manifest());
    let ok = cargo("generate-lockfile", home.path(), app.path(), Some(&token));
    support::assert_success(&ok);
    assert!(std::fs::read_to_string(app.path().join("Cargo.lock"))
        .unwrap()
        .contains("MixedCase"));
    // The second configured token works too, for downloads as well.
    let fetch = cargo("fetch", home.path(), app.path(), Some(&other_token));
    support::assert_success(&fetch);

    // Without a token cargo does not ask at all; a wrong one is answered 401
    // (not 403), which cargo reports as a rejected token with the login hint.
    let cases: [(Option<&str>, &[&str]); 2] = [
        (None, &["no token found for `mirror`"]),
        (
            Some("cmt_wrong"),
            &["token rejected for `mirror`", "config.json`, got 401"],
        ),
    ];
    for (token, expected) in cases {
        let fresh_home = private_home(&mirror.index_url());
        let app = project(&graph_project_manifest());
        let refused = cargo("generate-lockfile", fresh_home.path(), app.path(), token);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "cargo succeeded with {token:?}");
        for line in expected {
            assert!(stderr.contains(line), "{token:?}: {line:?} not in {stderr}");
        }
        assert!(!stderr.contains("got 403"), "{stderr}");
        assert!(!app.path().join("Cargo.lock").exists());
    }
}

#[tokio::test]
async fn refusals_reveal_nothing_and_probes_stay_open() {
    let Fortress {
        upstream,
        mirror,
        token,
        metrics_token,
    } = fortress().await;
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
            (Some("cmt_wrong"), StatusCode::UNAUTHORIZED),
            (Some(metrics_token.as_str()), StatusCode::UNAUTHORIZED),
            (Some("Bearer "), StatusCode::UNAUTHORIZED),
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
    let clone = support::git(dir.path(), &["clone", "--quiet", &with_token, "index"]);
    support::assert_success(&clone);
    assert!(dir.path().join("index/3/a/abc").exists());
    let anonymous = support::git(
        dir.path(),
        &["clone", "--quiet", &mirror.git_url(), "anonymous"],
    );
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
    let metrics_bearer = format!("Bearer {metrics_token}");
    // /metrics: the metrics token; a client token is valid but has no right
    // there (403); anything else is asked for credentials (401).
    // /api/stats names the most requested crates: in private mode a client or
    // a metrics token opens it, nothing else.
    for (route, client_token_status) in [
        ("/metrics", StatusCode::FORBIDDEN),
        ("/api/stats", StatusCode::OK),
    ] {
        for (header, status) in [
            (None, StatusCode::UNAUTHORIZED),
            (Some("cmt_wrong"), StatusCode::UNAUTHORIZED),
            (Some(token.as_str()), client_token_status),
            (Some(metrics_bearer.as_str()), StatusCode::OK),
        ] {
            let mut request = http.get(format!("{}{route}", mirror.url));
            if let Some(value) = header {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), status, "{route} with {header:?}");
            if status == StatusCode::UNAUTHORIZED {
                assert_eq!(
                    response.headers()["www-authenticate"],
                    "Bearer realm=\"crate-mirror\""
                );
            }
            let body = response.text().await.unwrap();
            assert!(
                status == StatusCode::OK || !body.contains("abc"),
                "{route} leaked: {body}"
            );
        }
    }
}

/// `crate-mirror serve --auth-tokens TOKENS` (an upstream nothing listens
/// on), which must refuse to start as a usage error (exit 2); its stderr.
fn refused_serve(tokens: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_crate-mirror"))
        .args([
            "serve",
            "--upstream",
            "http://127.0.0.1:9/",
            "--auth-tokens",
            tokens,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn public_mirrors_need_no_token_and_tokens_are_hashes() {
    let (_, hash) = new_token();
    assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64);
    let stderr = refused_serve("not-a-hash");
    assert!(stderr.contains("`auth-tokens`"), "{stderr}");
}

#[test]
fn a_private_mirror_without_public_url_refuses_to_start() {
    let (_, hash) = new_token();
    let stderr = refused_serve(&hash);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("public-url"), "{stderr}");
}

/// One raw HTTP/1.1 exchange, byte for byte (no client-side normalisation of
/// the path): the status and the body.
fn raw_exchange(
    base: &str,
    method: &str,
    target: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    let auth = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    send_raw(
        base,
        &format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"),
    )
}

/// Writes `request` as is and reads the whole answer: its status and body.
fn send_raw(base: &str, request: &str) -> (u16, String) {
    let answer = support::raw_exchange(base, request);
    (answer.status, answer.body)
}

/// A private mirror with metrics tokens and the git index, with `abc` cached
/// and the git index built: everything the encoded-route tests try to reach.
struct Fortress {
    upstream: TestUpstream,
    mirror: Mirror,
    token: String,
    metrics_token: String,
}

async fn fortress() -> Fortress {
    let (token, hash) = new_token();
    let (metrics_token, metrics_hash) = new_token();
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .git()
        .private(&hash)
        .args(&[
            "--metrics-tokens",
            &metrics_hash,
            "--git-rebuild-delay",
            "0",
        ])
        .start();
    let (status, body) = raw_exchange(&mirror.url, "GET", "/index/3/a/abc", Some(&token));
    assert_eq!(status, 200, "{body}");
    let metrics = format!("Bearer {metrics_token}");
    mirror
        .wait_for_git_files_authorized(2, Some(&metrics))
        .await;
    Fortress {
        upstream,
        mirror,
        token,
        metrics_token,
    }
}

#[tokio::test]
async fn percent_encoded_routes_stay_closed_without_a_token() {
    let f = fortress().await;
    let url = &f.mirror.url;
    // Each of these is a protected route spelled so that a check on the raw
    // path would miss it while the router still matches it.
    for target in [
        "/%6Detrics",
        "/%6detrics",
        "/api/%73tats",
        "/%67it/index/info/refs?service=git-upload-pack",
        "/git/%69ndex/info/refs?service=git-upload-pack",
        "/%69ndex/3/a/abc",
        "/index/3/a/%61bc",
        "/api/v1/%63rates/abc/1.0.0/download",
        "/%61pi/v1/crates/abc/1.0.0/download",
    ] {
        for method in ["GET", "HEAD", "POST"] {
            let (status, body) = raw_exchange(url, method, target, None);
            assert!(
                status == 401 || status == 404,
                "{method} {target} answered {status}"
            );
            assert!(
                !support::leaks_private_data(&body),
                "{method} {target} leaked: {body}"
            );
        }
    }
    // The same routes with the token are real routes (the encodings do match).
    assert_eq!(
        raw_exchange(url, "GET", "/api/%73tats", Some(&f.token)).0,
        200
    );
    assert_eq!(
        raw_exchange(
            url,
            "GET",
            "/%67it/index/info/refs?service=git-upload-pack",
            Some(&f.token)
        )
        .0,
        200
    );
    // git itself, through an encoded path, gets nothing.
    let dir = tempfile::tempdir().unwrap();
    let clone = support::git(
        dir.path(),
        &["clone", "--quiet", &format!("{url}/%67it/index"), "index"],
    );
    assert!(!clone.status.success());
    assert!(!dir.path().join("index/3/a/abc").exists());
}

/// Percent-encodes the bytes of `path` that `mask` selects, in upper or lower
/// hex, once or twice.
fn encode(path: &str, mask: &[bool], lower: &[bool], twice: &[bool]) -> String {
    let mut out = String::new();
    for (i, byte) in path.bytes().enumerate() {
        let pick = |v: &[bool]| v.get(i).copied().unwrap_or(false);
        if byte != b'/' && pick(mask) {
            let hex = if pick(lower) {
                format!("%{byte:02x}")
            } else {
                format!("%{byte:02X}")
            };
            if pick(twice) {
                out.push_str(&hex.replacen('%', "%25", 1));
            } else {
                out.push_str(&hex);
            }
        } else {
            out.push(byte as char);
        }
    }
    out
}

/// Every protected route, under generated spellings (any subset of its
/// characters percent-encoded in upper or lower hex, double encoding, `//`,
/// `/./`, a trailing `/`) and every method: without a token the answer is 401
/// or 404 and carries nothing.
#[tokio::test]
async fn generated_route_spellings_never_open_without_a_token() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let f = fortress().await;
    let routes = [
        ("/metrics", ""),
        ("/api/stats", ""),
        ("/index/config.json", ""),
        ("/index/3/a/abc", ""),
        ("/api/v1/crates/abc/1.0.0/download", ""),
        ("/git/index/info/refs", "?service=git-upload-pack"),
        ("/git/index/git-upload-pack", ""),
        ("/git/index/HEAD", ""),
    ];
    let strategy = (
        0..routes.len(),
        proptest::collection::vec(any::<bool>(), 40),
        proptest::collection::vec(any::<bool>(), 40),
        proptest::collection::vec(prop::bool::weighted(0.1), 40),
        0..4u8,
        0..3usize,
    );
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let url = f.mirror.url.clone();
    runner
        .run(&strategy, |(route, mask, lower, twice, shape, method)| {
            let (path, query) = routes[route];
            let mut target = encode(path, &mask, &lower, &twice);
            match shape {
                1 => {
                    target = target.replacen('/', "//", 1 + mask.iter().filter(|b| **b).count() % 2)
                }
                2 => target = target.replacen('/', "/./", 1),
                3 => target.push('/'),
                _ => {}
            }
            target.push_str(query);
            let method = ["GET", "HEAD", "POST"][method];
            let (status, body) = raw_exchange(&url, method, &target, None);
            prop_assert!(
                status == 401 || status == 404,
                "{} {} answered {}",
                method,
                target,
                status
            );
            prop_assert!(
                !support::leaks_private_data(&body),
                "{} {} leaked: {}",
                method,
                target,
                body
            );
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn client_headers_never_steer_the_dl_url() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let http = client();
    let config_of = |mirror: &Mirror, headers: &[(&str, &str)]| {
        let mut request = http.get(format!("{}config.json", mirror.index_url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    };

    // No public-url, no trusted proxies: forwarding headers are ignored; the
    // Host decides, and the answer says so.
    let mirror = Mirror::builder(&upstream.url).start();
    let port = mirror.url.rsplit(':').next().unwrap().to_string();
    let response = config_of(
        &mirror,
        &[
            ("x-forwarded-host", "attacker.example"),
            ("x-forwarded-proto", "javascript"),
            ("forwarded", "host=attacker.example;proto=https"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["vary"]
        .to_str()
        .unwrap()
        .contains("Host"));
    let config: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        config["dl"],
        format!("http://127.0.0.1:{port}/api/v1/crates")
    );
    let stats = json_of(
        http.get(format!("{}/api/stats", mirror.url))
            .header("x-forwarded-host", "attacker.example"),
    )
    .await;
    assert_eq!(
        stats["index_url"],
        format!("http://127.0.0.1:{port}/index/")
    );
    // A Host that is not a host name is refused, not echoed.
    for host in [
        "attacker.example/x",
        "user@attacker.example",
        "javascript:alert(1)",
        "a b",
    ] {
        let (status, body) = raw_exchange_with_host(&mirror.url, host);
        assert_eq!(status, 400, "Host {host:?}: {body}");
        assert!(!body.contains("attacker"), "{body}");
    }

    // With the peer trusted, the proxy's view counts, but only http/https and
    // valid hosts.
    let proxied = Mirror::builder(&upstream.url)
        .args(&["--trusted-proxies", "127.0.0.0/8"])
        .start();
    let config = json_of(config_of(
        &proxied,
        &[(
            "forwarded",
            "for=192.0.2.1;host=mirror.example.com;proto=https",
        )],
    ))
    .await;
    assert_eq!(config["dl"], "https://mirror.example.com/api/v1/crates");
    let response = config_of(
        &proxied,
        &[
            ("x-forwarded-host", "mirror.example.com"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert!(response.headers()["vary"]
        .to_str()
        .unwrap()
        .contains("X-Forwarded-Host"));
    let config: serde_json::Value = response.json().await.unwrap();
    assert_eq!(config["dl"], "https://mirror.example.com/api/v1/crates");
    for (name, value) in [
        ("x-forwarded-proto", "javascript"),
        ("x-forwarded-host", "attacker.example/evil"),
    ] {
        let response = config_of(&proxied, &[(name, value)]).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{name}: {value}"
        );
    }

    // With public-url nothing a client sends changes the body.
    let fixed = Mirror::builder(&upstream.url)
        .args(&["--public-url", "https://mirror.example.com"])
        .start();
    let config = json_of(config_of(
        &fixed,
        &[("x-forwarded-host", "attacker.example")],
    ))
    .await;
    assert_eq!(config["dl"], "https://mirror.example.com/api/v1/crates");
}

/// `GET /index/config.json` with a raw Host header.
fn raw_exchange_with_host(base: &str, host: &str) -> (u16, String) {
    send_raw(
        base,
        &format!("GET /index/config.json HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

#[tokio::test]
async fn private_without_metrics_tokens_opens_metrics_and_stats_to_clients_only() {
    let (token, hash) = new_token();
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).private(&hash).start();
    for route in ["/metrics", "/api/stats"] {
        let (status, body) = raw_exchange(&mirror.url, "GET", route, None);
        assert_eq!(status, 401, "{route}");
        assert!(!support::leaks_private_data(&body));
        assert_eq!(
            raw_exchange(&mirror.url, "GET", route, Some(&token)).0,
            200,
            "{route}"
        );
    }
    // The dashboard page itself is open (it asks for a token to read stats).
    assert_eq!(raw_exchange(&mirror.url, "GET", "/", None).0, 200);
}

/// Proxies that append to the forwarding headers leave the client's own
/// values on the left: the mirror reads the one its nearest trusted proxy
/// added (walking from the right past trusted hops, RFC 7239 §7.4), and when
/// both `Forwarded` and `X-Forwarded-Host` name a host they must agree (it
/// cannot tell which one its proxy wrote and which one the client did).
#[tokio::test]
async fn appended_forwarding_lists_are_read_from_the_nearest_trusted_proxy() {
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let http = client();
    let proxied = Mirror::builder(&upstream.url)
        .args(&["--trusted-proxies", "127.0.0.0/8"])
        .start();
    let config_of = |headers: &[(&str, &str)]| {
        let mut request = http.get(format!("{}config.json", proxied.index_url()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let good = "https://mirror.example.com/api/v1/crates";
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "Forwarded appended to the client's",
            &[(
                "forwarded",
                "host=attacker.example;proto=http, for=192.0.2.1;host=mirror.example.com;proto=https",
            )],
        ),
        (
            "Forwarded on two header lines",
            &[
                ("forwarded", "for=10.0.0.1;host=attacker.example;proto=http"),
                ("forwarded", "for=192.0.2.1;host=mirror.example.com;proto=https"),
            ],
        ),
        (
            "Forwarded through two trusted proxies",
            &[(
                "forwarded",
                "host=attacker.example, for=192.0.2.1;host=mirror.example.com;proto=https, for=127.0.0.2;host=inner.example;proto=http",
            )],
        ),
        (
            "X-Forwarded-* appended to the client's",
            &[
                ("x-forwarded-for", "198.51.100.7, 192.0.2.1"),
                ("x-forwarded-host", "attacker.example, mirror.example.com"),
                ("x-forwarded-proto", "http, https"),
            ],
        ),
        (
            "X-Forwarded-* through two trusted proxies",
            &[
                ("x-forwarded-for", "127.0.0.9, 192.0.2.1, 127.0.0.2"),
                (
                    "x-forwarded-host",
                    "attacker.example, mirror.example.com, inner.example",
                ),
                ("x-forwarded-proto", "http, https, http"),
            ],
        ),
        (
            "X-Forwarded-Host set (not appended) by the proxy",
            &[
                ("x-forwarded-for", "127.0.0.9, 192.0.2.1"),
                ("x-forwarded-host", "mirror.example.com"),
                ("x-forwarded-proto", "https"),
            ],
        ),
        (
            "both kinds, agreeing",
            &[
                ("forwarded", "for=192.0.2.1;host=mirror.example.com;proto=https"),
                ("x-forwarded-host", "attacker.example, mirror.example.com"),
            ],
        ),
    ];
    for (what, headers) in cases {
        let response = config_of(headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{what}");
        let config: serde_json::Value = response.json().await.unwrap();
        assert_eq!(config["dl"], good, "{what}");
    }
    // One of the two written by the client: refused, not picked.
    for headers in [
        [
            ("forwarded", "host=attacker.example;proto=https"),
            ("x-forwarded-host", "mirror.example.com"),
        ],
        [
            ("forwarded", "for=192.0.2.1;host=mirror.example.com"),
            ("x-forwarded-host", "attacker.example"),
        ],
    ] {
        let response = config_of(&headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(!response.text().await.unwrap().contains("attacker"));
    }
}
