//! The registry web API through the mirror: real `cargo search` and `cargo
//! info` with the mirror as a `[registries]` entry, searches and crate
//! metadata passed through to the upstream's API and cached briefly, writes
//! (publish, yank, owners) refused in cargo's JSON error format, bad input
//! refused before the upstream, upstream failures as JSON 502s, and private
//! mode guarding the API like the index.

use std::process::Output;
use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use support::cargo::{new_token, project, run_with_env, CargoHome};
use support::mirror::Mirror;
use support::registry::CrateSpec;
use support::upstream::TestUpstream;
use support::{client, json_of};

fn specs() -> Vec<CrateSpec> {
    vec![
        CrateSpec::new("serde-lite", "1.0.0"),
        CrateSpec::new("serde-lite", "1.2.0"),
        CrateSpec::new("serde-lite", "1.3.0").yanked(),
        CrateSpec::new("serde-extra", "0.4.1"),
        CrateSpec::new("tokio-ish", "2.0.0"),
    ]
}

/// A test upstream serving `specs()` with a web API, and a mirror of it.
fn upstream_with_api_and_mirror() -> (TestUpstream, Mirror) {
    let upstream = TestUpstream::builder(&specs()).api().start();
    let mirror = Mirror::builder(&upstream.url).start();
    (upstream, mirror)
}

/// A CARGO_HOME that knows the mirror as the registry `mirror`, tokens
/// through `cargo:token` (`CARGO_REGISTRIES_MIRROR_TOKEN`).
fn home(mirror: &Mirror) -> CargoHome {
    CargoHome::with_config(&format!(
        "[registries.mirror]\nindex = \"sparse+{}\"\n\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n\n[net]\nretry = 0\n",
        mirror.index_url()
    ))
}

/// `cargo ARGS` in an empty directory (no workspace around it), with
/// `token` as the mirror's token or none.
fn cargo(home: &CargoHome, args: &[&str], token: Option<&str>) -> Output {
    let dir = tempfile::tempdir().unwrap();
    cargo_in(home, dir.path(), args, token)
}

fn cargo_in(home: &CargoHome, dir: &std::path::Path, args: &[&str], token: Option<&str>) -> Output {
    let target = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &std::ffi::OsStr)> = token
        .map(|token| ("CARGO_REGISTRIES_MIRROR_TOKEN", token.as_ref()))
        .into_iter()
        .collect();
    run_with_env(home, dir, target.path(), args, &env)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the upstream's web API was asked (downloads aside), as `path?query`.
fn api_requests(upstream: &TestUpstream) -> Vec<String> {
    upstream
        .seen()
        .iter()
        .filter(|seen| seen.path.starts_with("/api/v1/crates") && !seen.path.ends_with("/download"))
        .map(|seen| format!("{}?{}", seen.path, seen.query))
        .collect()
}

/// The detail of the JSON error that a GET of `url` is answered, checking its status.
async fn get_error(url: &str, status: StatusCode) -> String {
    error_detail(client().get(url).send().await.unwrap(), status).await
}

/// The detail of a JSON error answer in cargo's format, checking its status.
async fn error_detail(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "{}", response.url());
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        response.headers()
    );
    let body: serde_json::Value = response.json().await.unwrap();
    let errors = body["errors"].as_array().expect("an errors list");
    assert_eq!(errors.len(), 1, "{body}");
    errors[0]["detail"].as_str().expect("a detail").to_string()
}

#[tokio::test]
async fn cargo_search_and_info_work_through_the_mirror_and_searches_are_cached() {
    let (upstream, mirror) = upstream_with_api_and_mirror();

    // The mirror announces itself as the API, since the upstream has one.
    let config = json_of(client().get(format!("{}config.json", mirror.index_url()))).await;
    assert_eq!(config["api"], mirror.url.as_str(), "{config}");
    assert_eq!(config["dl"], format!("{}/api/v1/crates", mirror.url));

    let home = home(&mirror);
    let search = cargo(&home, &["search", "serde", "--registry", "mirror"], None);
    let out = support::assert_success(&search);
    // The upstream's newest release that is not yanked, and its description.
    assert!(
        out.contains("serde-lite = \"1.2.0\"")
            && out.contains("# the serde-lite crate of the test upstream"),
        "{out}"
    );
    assert!(out.contains("serde-extra = \"0.4.1\""), "{out}");
    assert!(!out.contains("tokio-ish"), "{out}");
    // What cargo asks (its own per_page of 10) is what the upstream is asked.
    assert_eq!(
        api_requests(&upstream),
        ["/api/v1/crates?q=serde&per_page=10"]
    );

    // The same search within the cache time: the same answer, from memory.
    let again = support::assert_success(&cargo(
        &home,
        &["search", "serde", "--registry", "mirror"],
        None,
    ));
    assert_eq!(again, out);
    assert_eq!(
        api_requests(&upstream).len(),
        1,
        "{:?}",
        api_requests(&upstream)
    );
    // Another question is another request.
    let one = support::assert_success(&cargo(
        &home,
        &["search", "serde", "--limit", "1", "--registry", "mirror"],
        None,
    ));
    assert!(
        one.contains("serde-extra = \"0.4.1\"") && !one.contains("serde-lite"),
        "{one}"
    );
    assert!(
        one.contains("1 crates more") || one.contains("1 crate more"),
        "{one}"
    );
    assert_eq!(
        api_requests(&upstream)[1..],
        ["/api/v1/crates?q=serde&per_page=1"]
    );

    // `cargo info` reads the index and the .crate (for the manifest); it
    // asks the web API nothing.
    let before = api_requests(&upstream).len();
    let info = cargo(&home, &["info", "serde-lite", "--registry", "mirror"], None);
    let shown = support::assert_success(&info);
    assert!(shown.starts_with("serde-lite"), "{shown}");
    assert!(
        shown.contains("version: 1.2.0"),
        "{shown}\n{}",
        text(&info.stderr)
    );
    assert_eq!(
        api_requests(&upstream).len(),
        before,
        "{:?}",
        api_requests(&upstream)
    );
    assert_eq!(upstream.count_matching("/dl/serde-lite/1.2.0/download"), 1);

    // Crate metadata, passed through as the upstream sent it, then from memory.
    let url = format!("{}/api/v1/crates/serde-lite", mirror.url);
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-cache"], "MISS");
    let metadata: serde_json::Value = first.json().await.unwrap();
    assert_eq!(metadata["crate"]["max_version"], "1.2.0");
    let second = client().get(&url).send().await.unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(upstream.count("/api/v1/crates/serde-lite"), 1);
    let missing = format!("{}/api/v1/crates/no-such-crate", mirror.url);
    let detail = get_error(&missing, StatusCode::NOT_FOUND).await;
    assert_eq!(detail, "crate `no-such-crate` does not exist");

    let metrics = mirror.metrics().await;
    let api = |endpoint: &str, result: &str| {
        metrics[&format!(
            "crate_mirror_api_requests_total{{endpoint=\"{endpoint}\",result=\"{result}\"}}"
        )]
    };
    assert_eq!(api("search", "miss"), 2.0);
    assert_eq!(api("search", "hit"), 1.0);
    assert_eq!(api("crate", "miss"), 1.0);
    assert_eq!(api("crate", "hit"), 1.0);
    assert_eq!(api("crate", "not_found"), 1.0);
    assert_eq!(
        metrics
            ["crate_mirror_upstream_requests_total{kind=\"api\",origin=\"client\",status=\"200\"}"],
        3.0
    );
    assert_eq!(
        metrics["crate_mirror_http_requests_total{method=\"GET\",route=\"api\",status=\"200\"}"],
        5.0
    );
}

#[tokio::test]
async fn publish_yank_and_owner_are_refused_as_read_only() {
    let (upstream, mirror) = upstream_with_api_and_mirror();
    let home = home(&mirror);
    let token = Some("cmt_any_token");

    let app = project(
        "[package]\nname = \"my-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\ndescription = \"x\"\nlicense = \"MIT\"\n",
    );
    let writes: [&[&str]; 5] = [
        &["yank", "serde-lite@1.0.0", "--registry", "mirror"],
        &["yank", "--undo", "serde-lite@1.0.0", "--registry", "mirror"],
        &["owner", "--list", "serde-lite", "--registry", "mirror"],
        &[
            "owner",
            "--add",
            "someone",
            "serde-lite",
            "--registry",
            "mirror",
        ],
        &[
            "publish",
            "--no-verify",
            "--allow-dirty",
            "--registry",
            "mirror",
        ],
    ];
    for args in writes {
        let refused = cargo_in(&home, app.path(), args, token);
        let stderr = text(&refused.stderr);
        assert!(
            !refused.status.success(),
            "cargo {args:?} succeeded: {stderr}"
        );
        assert!(
            stderr.contains("(status 403 Forbidden): this mirror is read-only"),
            "cargo {args:?}: {stderr}"
        );
    }
    // Nothing of it went upstream.
    assert_eq!(api_requests(&upstream), Vec::<String>::new());

    // Every write route, whatever the method, answers the same JSON.
    let http = client();
    let base = format!("{}/api/v1/crates", mirror.url);
    let routes = [
        (reqwest::Method::PUT, format!("{base}/new")),
        (
            reqwest::Method::DELETE,
            format!("{base}/serde-lite/1.0.0/yank"),
        ),
        (
            reqwest::Method::PUT,
            format!("{base}/serde-lite/1.0.0/unyank"),
        ),
        (reqwest::Method::GET, format!("{base}/serde-lite/owners")),
        (reqwest::Method::PUT, format!("{base}/serde-lite/owners")),
        (reqwest::Method::DELETE, format!("{base}/serde-lite/owners")),
        (reqwest::Method::DELETE, format!("{base}/serde-lite")),
        (reqwest::Method::POST, base.clone()),
    ];
    for (method, url) in routes {
        let response = http
            .request(method.clone(), &url)
            .body("{}")
            .send()
            .await
            .unwrap();
        let detail = error_detail(response, StatusCode::FORBIDDEN).await;
        assert_eq!(detail, "this mirror is read-only", "{method} {url}");
    }
    assert_eq!(api_requests(&upstream), Vec::<String>::new());
    let metrics = mirror.metrics().await;
    assert_eq!(
        metrics["crate_mirror_api_requests_total{endpoint=\"write\",result=\"refused\"}"],
        13.0
    );

    // Downloads below the same prefix are unaffected; a crate named `new`
    // is metadata like any other.
    let download = http
        .get(format!("{base}/serde-lite/1.0.0/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let detail = get_error(&format!("{base}/new"), StatusCode::NOT_FOUND).await;
    assert_eq!(detail, "crate `new` does not exist");
}

#[tokio::test]
async fn bad_queries_and_names_are_400_and_what_goes_upstream_is_encoded_anew() {
    let (upstream, mirror) = upstream_with_api_and_mirror();
    let http = client();
    let base = format!("{}/api/v1/crates", mirror.url);
    for (path, why) in [
        ("", "a search needs `q`"),
        ("?per_page=10", "a search needs `q`"),
        ("?q=a&q=b", "`q` is given twice"),
        (
            "?q=a&per_page=101",
            "`per_page` must be a number from 1 to 100",
        ),
        (
            "?q=a&per_page=0",
            "`per_page` must be a number from 1 to 100",
        ),
        ("?q=a&page=x", "`page` must be a number from 1 to 1000"),
        ("?q=a&sort=downloads", "unsupported parameter `sort`"),
        ("?q=%ff", "`q` is not UTF-8"),
        ("?q=a%0Ab", "`q` contains control characters"),
        ("/1abc", "invalid crate name"),
        ("/a.b", "invalid crate name"),
        ("/a%2Fb", "invalid crate name"),
        ("/a%00b", "invalid crate name"),
    ] {
        let detail = get_error(&format!("{base}{path}"), StatusCode::BAD_REQUEST).await;
        assert!(detail.starts_with(why), "{path}: {detail}");
    }
    let long = format!("{base}?q={}", "a".repeat(257));
    let detail = get_error(&long, StatusCode::BAD_REQUEST).await;
    assert_eq!(detail, "`q` is longer than 256 bytes");
    assert_eq!(api_requests(&upstream), Vec::<String>::new());
    let metrics = mirror.metrics().await;
    let bad = |endpoint: &str| {
        metrics[&format!(
            "crate_mirror_api_requests_total{{endpoint=\"{endpoint}\",result=\"bad_request\"}}"
        )]
    };
    assert_eq!((bad("search"), bad("crate")), (10.0, 4.0));

    // A search is rebuilt: separators inside `q` stay inside it, `+` is a
    // space, parameters come in one order.
    let response = http
        .get(format!(
            "{base}?page=2&q=serde+lite%26admin%3Dtrue&per_page=5"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        api_requests(&upstream),
        ["/api/v1/crates?q=serde%20lite%26admin%3Dtrue&per_page=5&page=2"]
    );
}

#[tokio::test]
async fn upstream_api_failures_are_json_errors_that_cargo_prints() {
    let (upstream, mirror) = upstream_with_api_and_mirror();
    let home = home(&mirror);
    let http = client();
    let search = format!("{}/api/v1/crates?q=serde", mirror.url);

    upstream
        .switches
        .api_fail_status
        .store(500, Ordering::SeqCst);
    let failed = cargo(&home, &["search", "tokio", "--registry", "mirror"], None);
    let stderr = text(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("(status 502 Bad Gateway): upstream API: upstream ")
            && stderr.contains(" failed: http 500"),
        "{stderr}"
    );
    // Failures are not cached: the same search after the upstream recovers works.
    upstream.switches.api_fail_status.store(0, Ordering::SeqCst);
    let out = support::assert_success(&cargo(
        &home,
        &["search", "tokio", "--registry", "mirror"],
        None,
    ));
    assert!(out.contains("tokio-ish = \"2.0.0\""), "{out}");

    // Failing on: a 502 (three tries), then the API's own circuit opens
    // during the next one's tries: 503s, soon without asking the upstream...
    let api_fails = &upstream.switches.api_fail_status;
    api_fails.store(500, Ordering::SeqCst);
    let detail = get_error(&search, StatusCode::BAD_GATEWAY).await;
    assert!(
        detail.starts_with("upstream API: upstream http://127.0.0.1:")
            && detail.ends_with(" failed: http 500"),
        "{detail}"
    );
    let asked = api_requests(&upstream).len();
    let detail = get_error(&search, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(detail.contains("circuit open"), "{detail}");
    assert_eq!(
        api_requests(&upstream).len() - asked,
        2,
        "the fifth failure opened it"
    );
    let asked = api_requests(&upstream).len();
    let response = http.get(&search).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api_requests(&upstream).len(), asked);
    // ... which is not the registry's: index files still come from the upstream.
    let index = mirror.get("/index/to/ki/tokio-ish").await;
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(index.headers()["x-cache"], "MISS");
    let metrics = mirror.metrics().await;
    assert_eq!(
        metrics["crate_mirror_api_requests_total{endpoint=\"search\",result=\"error\"}"],
        4.0
    );
    assert_eq!(metrics["crate_mirror_upstream_circuit_open"], 0.0);
}

#[tokio::test]
async fn an_unreachable_upstream_api_is_a_json_502() {
    let (mut upstream, mirror) = upstream_with_api_and_mirror();
    // The upstream's config.json (and so its `api`) is known before it goes.
    let config = json_of(client().get(format!("{}config.json", mirror.index_url()))).await;
    assert!(config.get("api").is_some(), "{config}");
    upstream.stop();
    let url = format!("{}/api/v1/crates/serde-lite", mirror.url);
    let detail = get_error(&url, StatusCode::BAD_GATEWAY).await;
    assert!(
        detail.starts_with("upstream API: upstream http://127.0.0.1:")
            && detail.ends_with(" failed: connection refused"),
        "{detail}"
    );
}

#[tokio::test]
async fn without_an_upstream_api_the_mirror_announces_none() {
    let upstream = TestUpstream::builder(&specs()).start();
    let mirror = Mirror::builder(&upstream.url).start();
    let config = json_of(client().get(format!("{}config.json", mirror.index_url()))).await;
    assert!(config.get("api").is_none(), "{config}");
    assert!(config.get("dl").is_some(), "{config}");

    // cargo then says so itself, as it would of the upstream.
    let failed = cargo(
        &home(&mirror),
        &["search", "serde", "--registry", "mirror"],
        None,
    );
    let stderr = text(&failed.stderr);
    assert!(!failed.status.success());
    assert!(stderr.contains("does not support API commands"), "{stderr}");
    // A client that asks anyway learns why, and the upstream is not asked.
    let url = format!("{}/api/v1/crates?q=serde", mirror.url);
    let detail = get_error(&url, StatusCode::NOT_FOUND).await;
    assert!(
        detail.starts_with("the upstream registry has no web API"),
        "{detail}"
    );
    assert_eq!(api_requests(&upstream), Vec::<String>::new());
}

#[tokio::test]
async fn a_private_mirror_guards_the_api_like_the_index() {
    let (token, hash) = new_token();
    let upstream = TestUpstream::builder(&specs()).api().start();
    let mirror = Mirror::builder(&upstream.url)
        .public_url()
        .args(&["--auth-tokens", &hash])
        .start();
    let http = client();
    let base = format!("{}/api/v1/crates", mirror.url);
    for (method, url) in [
        (reqwest::Method::GET, format!("{base}?q=serde")),
        (reqwest::Method::GET, format!("{base}/serde-lite")),
        (reqwest::Method::PUT, format!("{base}/new")),
        (
            reqwest::Method::DELETE,
            format!("{base}/serde-lite/1.0.0/yank"),
        ),
        // Spellings of the same routes meet the same gate.
        (
            reqwest::Method::GET,
            format!("{}/api/v1/%63rates?q=serde", mirror.url),
        ),
    ] {
        for wrong in [None, Some("cmt_wrong")] {
            let mut request = http.request(method.clone(), &url);
            if let Some(value) = wrong {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {url} {wrong:?}"
            );
            let body = response.text().await.unwrap();
            assert!(!body.contains("serde"), "{url} leaked {body}");
        }
    }
    assert_eq!(api_requests(&upstream), Vec::<String>::new());

    // With the token: config.json announces the API, cargo sends the token
    // with its search (auth-required), writes are refused as read-only.
    let config = json_of(
        http.get(format!("{}config.json", mirror.index_url()))
            .header("authorization", &token),
    )
    .await;
    assert_eq!(config["api"], mirror.url.as_str());
    assert_eq!(config["auth-required"], true);
    let home = home(&mirror);
    let out = support::assert_success(&cargo(
        &home,
        &["search", "serde", "--registry", "mirror"],
        Some(&token),
    ));
    assert!(out.contains("serde-lite = \"1.2.0\""), "{out}");
    let refused = cargo(
        &home,
        &["yank", "serde-lite@1.0.0", "--registry", "mirror"],
        Some(&token),
    );
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("this mirror is read-only"), "{stderr}");
    let response = http
        .get(format!("{base}/serde-lite"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_identical_searches_make_one_upstream_request() {
    let (upstream, mirror) = upstream_with_api_and_mirror();
    let url = format!("{}/api/v1/crates?q=serde&per_page=10", mirror.url);
    // The upstream holds the search until all twenty are waiting for it.
    upstream
        .switches
        .held
        .lock()
        .unwrap()
        .push("/api/v1/crates".into());
    let searches: Vec<_> = (0..20)
        .map(|_| tokio::spawn(client().get(&url).send()))
        .collect();
    support::wait_until(
        std::time::Duration::from_secs(10),
        "the first search reaches the upstream",
        || async { !api_requests(&upstream).is_empty() },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    upstream.switches.held.lock().unwrap().clear();
    let mut bodies = Vec::new();
    for search in searches {
        let response = search.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(response.text().await.unwrap());
    }
    assert!(bodies.iter().all(|body| body == &bodies[0]));
    assert!(bodies[0].contains("serde-extra"), "{}", bodies[0]);
    assert_eq!(
        api_requests(&upstream).len(),
        1,
        "{:?}",
        api_requests(&upstream)
    );
}
