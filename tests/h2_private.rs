//! Private mode over HTTP/2: every protected route, under many spellings
//! (percent-encoded in upper and lower hex, double encoding, `//`, `/./`, a
//! trailing `/`), with GET, HEAD and POST, is never answered 200 without a
//! token, whether the request came by HTTP/2 prior knowledge, by an h2c
//! upgrade (whose first request the mirror rewrites into a HEADERS frame
//! itself) or by HTTPS with ALPN. Real curl speaks each flavour; the raw
//! client adds `:path` values no client library would send.

use std::path::Path;
use std::process::Command;

use support::cargo::new_token;
use support::h2raw::{request_block, Outcome, H2};
use support::mirror::Mirror;
use support::registry::graph_registry;
use support::tls::make_certificates;
use support::upstream::{DlStyle, TestUpstream};

/// The protected routes, each with the query it needs.
const ROUTES: [(&str, &str); 12] = [
    ("/metrics", ""),
    ("/api/stats", ""),
    ("/api/settings", ""),
    ("/api/crates", ""),
    ("/index/config.json", ""),
    ("/index/3/a/abc", ""),
    ("/api/v1/crates/abc/1.0.0/download", ""),
    ("/api/v1/crates", "?q=abc"),
    ("/api/v1/crates/abc", ""),
    ("/git/index/info/refs", "?service=git-upload-pack"),
    ("/git/index/git-upload-pack", ""),
    ("/git/index/HEAD", ""),
];

/// `byte` percent-encoded, in lower or upper hex.
fn pct(byte: u8, lower: bool) -> String {
    if lower {
        format!("%{byte:02x}")
    } else {
        format!("%{byte:02X}")
    }
}

/// Spellings of `path` that a router decoding percent-escapes still matches
/// (or that a careless one would): each segment's first letter encoded, every
/// letter encoded, double encoding, doubled and dotted slashes, a trailing
/// slash.
fn spellings(path: &str, query: &str) -> Vec<String> {
    let mut out = vec![path.to_string()];
    let encode_where = |pick: &dyn Fn(usize, u8) -> bool, lower: bool| -> String {
        path.bytes()
            .enumerate()
            .map(|(i, b)| {
                if b != b'/' && pick(i, b) {
                    pct(b, lower)
                } else {
                    char::from(b).to_string()
                }
            })
            .collect()
    };
    let first_of_segment = |i: usize, _: u8| i > 0 && path.as_bytes()[i - 1] == b'/';
    out.push(encode_where(&first_of_segment, false));
    out.push(encode_where(&first_of_segment, true));
    out.push(encode_where(&|_, b| b.is_ascii_alphabetic(), false));
    out.push(encode_where(&|i, _| i == path.len() - 1, true));
    // Double encoding: `%256D` decodes once to `%6D`, which must not open
    // anything either.
    out.push(encode_where(&first_of_segment, false).replacen('%', "%25", 1));
    out.push(path.replacen('/', "//", 1));
    out.push(path.replacen('/', "/./", 1));
    out.push(format!("{path}/"));
    out.push(path.replace('/', "/%2e/").replacen("/%2e/", "/", 1));
    out.into_iter().map(|p| format!("{p}{query}")).collect()
}

/// A private mirror with a client token and a metrics token, `abc` cached
/// and the git index built, on plain HTTP or (with `certs`) HTTPS.
struct Private {
    upstream: TestUpstream,
    mirror: Mirror,
    token: String,
}

async fn private_mirror(certs: Option<&Path>) -> Private {
    let (token, hash) = new_token();
    let (_, metrics_hash) = new_token();
    let upstream = TestUpstream::start(&graph_registry(), DlStyle::Plain);
    let mut builder = Mirror::builder(&upstream.url).git().private(&hash).args(&[
        "--metrics-tokens",
        &metrics_hash,
        "--git-rebuild-delay",
        "0",
    ]);
    if let Some(certs) = certs {
        builder = builder.tls(certs);
    }
    let mirror = builder.start();
    Private {
        upstream,
        mirror,
        token,
    }
}

/// One curl run over `urls` with `flags`: per URL, the status, the HTTP
/// version and the body (each written to its own file in `out`).
fn curl(flags: &[&str], urls: &[String], out: &Path) -> Vec<(u16, String, String)> {
    let mut args: Vec<String> = [
        "-sS",
        "--path-as-is",
        "--max-time",
        "30",
        "-w",
        "%{http_code} %{http_version}\\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(flags.iter().map(|s| s.to_string()));
    let files: Vec<_> = (0..urls.len())
        .map(|i| out.join(format!("body-{i}")))
        .collect();
    for (url, file) in urls.iter().zip(&files) {
        args.push("-o".into());
        args.push(file.to_string_lossy().into_owned());
        args.push(url.clone());
    }
    let output = Command::new("curl").args(&args).output().expect("curl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.stderr.is_empty() {
        eprintln!(
            "curl {flags:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        urls.len(),
        "curl {flags:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    lines
        .iter()
        .zip(&files)
        .map(|(line, file)| {
            let (code, version) = line.split_once(' ').expect("code and version");
            let body = std::fs::read(file).unwrap_or_default();
            let _ = std::fs::remove_file(file);
            (
                code.parse().expect("status"),
                version.to_string(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        })
        .collect()
}

/// `curl` once per URL (each on a connection of its own), four at a time;
/// the answers in the order of `urls`.
fn curl_each(flags: &[&str], urls: &[String], out: &Path) -> Vec<(u16, String, String)> {
    let chunk = urls.len().div_ceil(4).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = urls
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                let dir = out.join(format!("worker-{n}"));
                std::fs::create_dir_all(&dir).unwrap();
                scope.spawn(move || {
                    part.iter()
                        .flat_map(|url| curl(flags, std::slice::from_ref(url), &dir))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// The method flags curl is given for each method tried.
const METHODS: [(&str, &[&str]); 3] = [("GET", &[]), ("HEAD", &["-I"]), ("POST", &["-X", "POST"])];

/// Every spelling of every protected route, with every method, over curl
/// with `flavour` (which must end up speaking HTTP/2): never 200 without a
/// token, never a leak. `one_per_connection` runs curl once per URL, so that
/// each request is the first of its connection (the one an h2c upgrade
/// carries; and this curl, 7.88, fails every request after the first on a
/// reused prior-knowledge connection, against any server). Returns how many
/// requests were tried.
fn assert_closed(
    base: &str,
    flavour: &[&str],
    methods: &[(&str, &[&str])],
    one_per_connection: bool,
    per_route: usize,
) -> usize {
    let out = tempfile::tempdir().unwrap();
    let urls: Vec<String> = ROUTES
        .iter()
        .flat_map(|(path, query)| spellings(path, query).into_iter().take(per_route))
        .map(|spelling| format!("{base}{spelling}"))
        .collect();
    let mut tried = 0;
    for (method, method_flags) in methods {
        let flags: Vec<&str> = flavour.iter().chain(method_flags.iter()).copied().collect();
        let answers = if one_per_connection {
            curl_each(&flags, &urls, out.path())
        } else {
            curl(&flags, &urls, out.path())
        };
        for (url, (status, version, body)) in urls.iter().zip(answers) {
            assert_eq!(version, "2", "{method} {url} was not HTTP/2");
            assert!(
                status == 401 || status == 404,
                "{method} {url} over {flavour:?} answered {status}: {body}"
            );
            assert!(
                !support::leaks_private_data(&body),
                "{method} {url} leaked: {body}"
            );
            tried += 1;
        }
    }
    tried
}

/// The same spellings with the token are real routes: the encodings do
/// reach the handlers, so the refusals above are the token check's.
fn assert_open_with_token(base: &str, flavour: &[&str], token: &str, one_per_connection: bool) {
    let out = tempfile::tempdir().unwrap();
    let header = format!("Authorization: {token}");
    let mut flags = flavour.to_vec();
    flags.extend(["-H", &header]);
    let urls = [
        format!("{base}/index/3/a/abc"),
        format!("{base}/api/v1/crates/abc/1.0.0/download"),
        format!("{base}/api/%73tats"),
        format!("{base}/%61pi/settings"),
    ];
    let answers: Vec<_> = if one_per_connection {
        curl_each(&flags, &urls, out.path())
    } else {
        curl(&flags, &urls, out.path())
    };
    for (url, (status, version, _)) in urls.iter().zip(answers) {
        assert_eq!((status, version.as_str()), (200, "2"), "{url} with a token");
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_and_upgrade_never_open_a_route_without_a_token() {
    let p = private_mirror(None).await;
    let base = p.mirror.url.clone();
    let token = p.token.clone();
    let tried = tokio::task::spawn_blocking(move || {
        let prior = ["--http2-prior-knowledge"];
        let upgrade = ["--http2"];
        // With the token first, so that abc is cached and a leak would show.
        assert_open_with_token(&base, &prior, &token, true);
        assert_open_with_token(&base, &upgrade, &token, false);
        // Prior knowledge with GET here (the raw client below tries every
        // method on one connection); the upgrade, whose first request the
        // mirror rewrites itself, with GET, and HEAD and POST on the first
        // spellings of each route.
        let mut tried = assert_closed(&base, &prior, &METHODS[..1], true, usize::MAX);
        tried += assert_closed(&base, &upgrade, &METHODS[..1], true, usize::MAX);
        tried += assert_closed(&base, &upgrade, &METHODS[1..], true, 3);
        tried
    })
    .await
    .unwrap();
    assert!(tried >= 2 * 100 + 2 * 30, "only {tried} requests");
    // The token-holding requests fetched abc from the upstream once (the
    // second time it was cached); none of the refused ones did.
    assert_eq!(
        p.upstream.count_matching("/dl/"),
        1,
        "{:?}",
        p.upstream.seen()
    );
}

#[tokio::test]
async fn https_with_alpn_never_opens_a_route_without_a_token() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let p = private_mirror(Some(certs.path())).await;
    assert!(p.mirror.url.starts_with("https://"), "{}", p.mirror.url);
    let base = p.mirror.url.clone();
    let token = p.token.clone();
    let ca = certs.path().join("ca.pem").to_string_lossy().into_owned();
    let tried = tokio::task::spawn_blocking(move || {
        let flavour = ["--http2", "--cacert", ca.as_str()];
        assert_open_with_token(&base, &flavour, &token, false);
        assert_closed(&base, &flavour, &METHODS, false, usize::MAX)
    })
    .await
    .unwrap();
    assert!(tried >= 3 * 100, "only {tried} requests");
}

/// `:path` values only a raw HTTP/2 client sends (no leading slash, an
/// asterisk, a fragment, an absolute URL, a NUL), methods in odd case, and
/// every spelling above with every method on one connection: refused or
/// not found, never a protected route's answer.
#[tokio::test]
async fn raw_http2_paths_never_open_a_route_without_a_token() {
    let p = private_mirror(None).await;
    let base = p.mirror.url.clone();
    let token = p.token.clone();
    tokio::task::spawn_blocking(move || {
        let mut paths: Vec<Vec<u8>> = vec![
            b"metrics".to_vec(),
            b"*".to_vec(),
            b"/metrics#x".to_vec(),
            b"/metrics?".to_vec(),
            b"http://localhost/metrics".to_vec(),
            b"/api/stats;x".to_vec(),
            b"/api/stats\0".to_vec(),
            b"/index/3/a/abc%00".to_vec(),
            b"/index/3/a/../a/abc".to_vec(),
            b"/git/index/info/refs?service=git-upload-pack".to_vec(),
            b"//metrics".to_vec(),
            b"/%6Detrics".to_vec(),
            b"/%256Detrics".to_vec(),
            b"/api/%73tats/".to_vec(),
            b"\\metrics".to_vec(),
        ];
        // And every spelling curl was given, with every method, on one
        // connection.
        paths.extend(
            ROUTES
                .iter()
                .flat_map(|(path, query)| spellings(path, query))
                .map(String::into_bytes),
        );
        let mut conn = H2::connect(&base).expect("connect");
        let mut stream = 1;
        let mut answered = 0;
        for path in &paths {
            for method in ["GET", "get", "HEAD", "POST", "OPTIONS"] {
                let block = request_block(method, path, &[]);
                conn.request(stream, &block).expect("send");
                let outcome = conn.outcome(stream).expect("read");
                let shown = String::from_utf8_lossy(path);
                match &outcome {
                    Outcome::Answered { status, body } => {
                        let body = String::from_utf8_lossy(body);
                        assert!(
                            (400..500).contains(status),
                            "{method} {shown:?} answered {status}: {body}"
                        );
                        assert!(
                            !support::leaks_private_data(&body),
                            "{method} {shown:?} leaked: {body}"
                        );
                        answered += 1;
                    }
                    // A path the HTTP/2 layer refuses resets the stream (or,
                    // for some, the connection): nothing answered.
                    Outcome::Reset(_) => {}
                    Outcome::GoAway(_) | Outcome::Closed => {
                        conn = H2::connect(&base).expect("reconnect");
                        stream = 1;
                        continue;
                    }
                }
                stream += 2;
            }
        }
        // Most were answered (a refusal the test reads), not just reset.
        eprintln!("{answered} of {} raw requests answered", paths.len() * 5);
        assert!(answered >= paths.len() * 4, "only {answered} answered");
        // The same client with the token is answered: the client works.
        let block = request_block("GET", b"/api/stats", &[("authorization", &token)]);
        let mut conn = H2::connect(&base).expect("connect");
        conn.request(1, &block).expect("send");
        match conn.outcome(1).expect("read") {
            Outcome::Answered { status, .. } => assert_eq!(status, 200),
            other => panic!("with a token: {other:?}"),
        }
    })
    .await
    .unwrap();
}
