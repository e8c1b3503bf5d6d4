//! The dashboard's page and JSON: a Content-Security-Policy on the page, and
//! with `public-url` set, answers only to that host and to loopback names, so
//! a page on another site cannot read the figures through a DNS name it
//! points at the mirror (DNS rebinding). The registry routes are unaffected.

use support::browser::Browser;
use support::mirror::Mirror;
use support::registry::graph_registry;
use support::upstream::{DlStyle, TestUpstream};

/// `GET target` with a raw `Host` and `extra` header lines: the status and
/// the response head.
fn get_with_host(base: &str, target: &str, host: &str, extra: &str) -> (u16, String) {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    let answer = support::raw_exchange(base, &request);
    (answer.status, answer.head)
}

/// The dashboard's routes: the page, its assets and its JSON.
const DASHBOARD: &[&str] = &[
    "/",
    "/static/app.js",
    "/static/style.css",
    "/api/stats",
    "/api/settings",
    "/api/crates",
    "/api/cargo-config",
];

#[tokio::test]
async fn the_page_sends_a_content_security_policy() {
    let upstream = TestUpstream::start(&graph_registry()[..3], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    let response = mirror.get("/").await;
    assert_eq!(response.status(), 200);
    let csp = response
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"default-src 'self'"), "{csp:?}");
    assert!(directives.contains(&"frame-ancestors 'none'"), "{csp:?}");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

/// In headless Chromium the page loads its figures and settings under the
/// policy with nothing blocked (the page counts violations as errors), while
/// an inline script, which the policy exists to stop, does not run.
#[tokio::test]
async fn chromium_enforces_the_policy_and_the_page_still_works() {
    let upstream = TestUpstream::start(&graph_registry()[..3], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url).start();
    assert_eq!(mirror.get("/index/1/a").await.status(), 200);
    let mut browser = Browser::open(&format!("{}/", mirror.url), 1200, 800);
    let state = "document.getElementById('dashboard-state').dataset";
    browser.wait_until(
        &format!("{state}.loaded >= 1 && {state}.settingsLoaded >= 1"),
        std::time::Duration::from_secs(30),
        &format!("JSON.stringify({state})"),
    );
    assert_eq!(browser.eval(&format!("{state}.errors")), "0");
    assert_eq!(
        browser.eval("document.getElementById('version').textContent.length > 0"),
        true
    );
    browser.eval(
        "(() => { const s = document.createElement('script'); \
         s.textContent = 'window.injected = true'; document.body.appendChild(s); })()",
    );
    browser.wait_until(
        &format!("Number({state}.errors) >= 1"),
        std::time::Duration::from_secs(10),
        &format!("JSON.stringify({state}) + ' injected: ' + window.injected"),
    );
    assert_eq!(browser.eval("window.injected === undefined"), true);
}

#[tokio::test]
async fn with_public_url_the_dashboard_answers_only_its_host_and_loopback() {
    let upstream = TestUpstream::start(&graph_registry()[..3], DlStyle::Plain);
    let mirror = Mirror::builder(&upstream.url)
        .args(&["--public-url", "https://mirror.example.com"])
        .start();
    let port = mirror.url.rsplit(':').next().unwrap().to_string();
    for path in DASHBOARD {
        for host in [
            "mirror.example.com".to_string(),
            "MIRROR.example.com:443".to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            "localhost".to_string(),
        ] {
            let (status, head) = get_with_host(&mirror.url, path, &host, "");
            assert_eq!(status, 200, "{path} with Host {host}: {head}");
        }
        for host in [
            format!("attacker.example:{port}"),
            "attacker.example".to_string(),
            "mirror.example.com.attacker.example".to_string(),
            format!("192.0.2.1:{port}"),
        ] {
            let (status, head) = get_with_host(&mirror.url, path, &host, "");
            assert_eq!(status, 421, "{path} with Host {host}: {head}");
        }
    }
    // The registry routes and the probes answer whatever the Host.
    for path in ["/index/config.json", "/index/1/a", "/health"] {
        let (status, head) = get_with_host(&mirror.url, path, "attacker.example", "");
        assert_eq!(status, 200, "{path}: {head}");
    }
    // Forwarding headers count only from a trusted proxy.
    let (status, _) = get_with_host(
        &mirror.url,
        "/api/stats",
        "attacker.example",
        "X-Forwarded-Host: mirror.example.com\r\n",
    );
    assert_eq!(status, 421);

    // Behind a trusted proxy, the host it was asked for counts.
    let proxied = Mirror::builder(&upstream.url)
        .args(&[
            "--public-url",
            "https://mirror.example.com",
            "--trusted-proxies",
            "127.0.0.0/8",
        ])
        .start();
    for (extra, expected) in [
        ("X-Forwarded-Host: mirror.example.com\r\n", 200),
        ("Forwarded: for=192.0.2.1;host=mirror.example.com\r\n", 200),
        ("X-Forwarded-Host: attacker.example\r\n", 421),
        (
            "X-Forwarded-Host: mirror.example.com, attacker.example\r\n",
            421,
        ),
        ("", 200),
    ] {
        let (status, head) = get_with_host(&proxied.url, "/api/settings", "localhost", extra);
        assert_eq!(status, expected, "{extra:?}: {head}");
    }

    // Without public-url there is no host to hold to: the page answers.
    let open = Mirror::builder(&upstream.url).start();
    let (status, _) = get_with_host(&open.url, "/api/stats", "attacker.example", "");
    assert_eq!(status, 200);
}
