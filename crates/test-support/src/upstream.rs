//! A test upstream: a local sparse registry serving generated index files and
//! `.crate` files (and, when asked, the read-only part of a registry web API),
//! with switches to slow it, fail it, stop it and count what it was asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::registry::{publish, CrateSpec, Published};
use super::server::ServerThread;

/// How the upstream's config.json spells `dl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DlStyle {
    /// `{base}/dl`: cargo (and the mirror) append `/{crate}/{version}/download`.
    Plain,
    /// `{base}/files/{lowerprefix}/{crate}/{version}/{sha256-checksum}.crate`.
    Markers,
}

/// One request the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
}

#[derive(Default)]
pub struct Switches {
    /// Every response delayed this long.
    pub delay_ms: AtomicU64,
    /// Download bodies sent in 16 KiB chunks with this pause between them.
    pub chunk_delay_ms: AtomicU64,
    /// Download bodies pause this long once half of their chunks are sent.
    pub stall_mid_body_ms: AtomicU64,
    /// Answer every request with this status (0 = behave).
    pub fail_status: AtomicU16,
    /// Flip one byte of every download body (a checksum mismatch).
    pub corrupt_downloads: AtomicBool,
    /// Send no ETag/Last-Modified (and ignore conditional headers).
    pub no_validators: AtomicBool,
    /// Announce the full Content-Length of downloads but send only half.
    pub truncate_downloads: AtomicBool,
    /// Requests whose path contains one of these wait until it is removed.
    pub held: Mutex<Vec<String>>,
    /// Index files sent gzip'd (as `gzip_of` makes them) to clients that
    /// accept gzip, as public registries do.
    pub gzip_index: AtomicBool,
    /// Index files answered with exactly these bytes and this
    /// `Content-Encoding`, by lowercased name (a broken gzip, say).
    pub raw_index: Mutex<HashMap<String, (String, Bytes)>>,
    /// Answer web API requests (`/api/v1/crates...`, downloads aside) with
    /// this status (0 = behave), the rest of the registry unaffected.
    pub api_fail_status: AtomicU16,
}

/// How the test upstream gzips an index body: best compression and a file
/// name in the gzip header, so the bytes differ from what the mirror's own
/// compression would make and a test can tell whose bytes it got.
pub fn gzip_of(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::GzBuilder::new()
        .filename("from-the-upstream")
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

struct State {
    base: String,
    dl_style: Mutex<DlStyle>,
    /// config.json announces `api` and the web API is answered.
    api: bool,
    /// lowercased name -> (status, body)
    index: Mutex<HashMap<String, (u16, String)>>,
    /// (lowercased name, version) -> tarball
    files: Mutex<HashMap<(String, String), Bytes>>,
    seen: Mutex<Vec<Seen>>,
    switches: Arc<Switches>,
}

pub struct TestUpstream {
    state: Arc<State>,
    pub switches: Arc<Switches>,
    server: ServerThread,
    pub url: String,
}

/// How to start a test upstream: `TestUpstream::builder(specs)`, then what
/// differs from a plain `dl` and no web API.
pub struct TestUpstreamBuilder {
    specs: Vec<CrateSpec>,
    dl_style: DlStyle,
    api: bool,
}

impl TestUpstreamBuilder {
    pub fn dl_style(mut self, dl_style: DlStyle) -> Self {
        self.dl_style = dl_style;
        self
    }

    /// Announces `api` (the upstream's own base URL) in config.json and
    /// answers search (`/api/v1/crates?q=`) and crate metadata
    /// (`/api/v1/crates/{name}`) in the public registry's JSON shape, from
    /// the published index files: a search finds the names containing `q`.
    pub fn api(mut self) -> Self {
        self.api = true;
        self
    }

    pub fn start(self) -> TestUpstream {
        TestUpstream::start_with(self)
    }
}

impl TestUpstream {
    /// A test upstream with a plain `dl` and no web API; see `TestUpstreamBuilder`.
    pub fn builder(specs: &[CrateSpec]) -> TestUpstreamBuilder {
        TestUpstreamBuilder {
            specs: specs.to_vec(),
            dl_style: DlStyle::Plain,
            api: false,
        }
    }

    pub fn start(specs: &[CrateSpec], dl_style: DlStyle) -> Self {
        Self::builder(specs).dl_style(dl_style).start()
    }

    fn start_with(options: TestUpstreamBuilder) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind test upstream");
        let addr = listener.local_addr().expect("local addr");
        let base = format!("http://{addr}");
        let switches = Arc::new(Switches::default());
        let state = Arc::new(State {
            base: base.clone(),
            dl_style: Mutex::new(options.dl_style),
            api: options.api,
            index: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            switches: switches.clone(),
        });
        let server = ServerThread::start(listener, None, state.clone(), handle, || {});
        let upstream = TestUpstream {
            state,
            switches,
            server,
            url: format!("{base}/index/"),
        };
        upstream.publish_all(&options.specs);
        upstream
    }

    /// Adds versions (appending index lines) and returns what was published.
    pub fn publish_all(&self, specs: &[CrateSpec]) -> Vec<Published> {
        let published: Vec<Published> = specs.iter().map(publish).collect();
        for p in &published {
            self.add(p);
        }
        published
    }

    pub fn add(&self, p: &Published) {
        let key = p.name.to_ascii_lowercase();
        let mut index = self.state.index.lock().unwrap();
        let entry = index.entry(key.clone()).or_insert((200, String::new()));
        entry.0 = 200;
        entry.1.push_str(&p.line);
        entry.1.push('\n');
        self.state
            .files
            .lock()
            .unwrap()
            .insert((key, p.vers.clone()), Bytes::from(p.tarball.clone()));
    }

    /// Changes the `dl` that config.json announces from now on (both styles of
    /// download path keep being served).
    pub fn set_dl_style(&self, style: DlStyle) {
        *self.state.dl_style.lock().unwrap() = style;
    }

    /// Replaces an index file's body (e.g. to mark a version yanked).
    pub fn set_index(&self, name: &str, status: u16, body: &str) {
        self.state
            .index
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), (status, body.to_string()));
    }

    pub fn index_body(&self, name: &str) -> Option<String> {
        let index = self.state.index.lock().unwrap();
        index
            .get(&name.to_ascii_lowercase())
            .map(|(_, body)| body.clone())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests had exactly this path.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    /// How many requests had a path containing `fragment`.
    pub fn count_matching(&self, fragment: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.contains(fragment))
            .count()
    }

    pub fn total_requests(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Stops the server: its port refuses connections from now on.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

fn etag_of(body: &str) -> String {
    format!(
        "\"up-{}\"",
        &super::registry::sha256_hex(body.as_bytes())[..20]
    )
}

/// The upstream's Last-Modified for every file: fixed, so revalidation can be tested.
const UPSTREAM_LAST_MODIFIED: &str = "Tue, 02 Jan 2024 03:04:05 GMT";

async fn handle(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        query: req.query_string().to_string(),
        if_none_match: header("if-none-match"),
        if_modified_since: header("if-modified-since"),
    });
    let switches = &state.switches;
    for _ in 0..600 {
        let held = switches
            .held
            .lock()
            .unwrap()
            .iter()
            .any(|h| path.contains(h.as_str()));
        if !held {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let delay = switches.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = switches.fail_status.load(Ordering::SeqCst);
    if fail != 0 {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(fail).unwrap())
            .body("test upstream failing on purpose");
    }
    if path == "/index/config.json" {
        let style = *state.dl_style.lock().unwrap();
        let dl = match style {
            DlStyle::Plain => format!("{}/dl", state.base),
            DlStyle::Markers => format!(
                "{}/files/{{lowerprefix}}/{{crate}}/{{version}}/{{sha256-checksum}}.crate",
                state.base
            ),
        };
        let mut config = serde_json::json!({ "dl": dl });
        if state.api {
            config["api"] = state.base.clone().into();
        }
        return HttpResponse::Ok().json(config);
    }
    if let Some(answer) = web_api(&req, &state) {
        return answer;
    }
    if let Some(rest) = path.strip_prefix("/index/") {
        let name = rest.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
        let raw = switches.raw_index.lock().unwrap().get(&name).cloned();
        if let Some((encoding, bytes)) = raw {
            return HttpResponse::Ok()
                .insert_header(("content-encoding", encoding))
                .body(bytes);
        }
        let found = state.index.lock().unwrap().get(&name).cloned();
        let Some((status, body)) = found else {
            return HttpResponse::NotFound().body("no such crate");
        };
        if status != 200 {
            return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .finish();
        }
        if switches.no_validators.load(Ordering::SeqCst) {
            return HttpResponse::Ok().body(body);
        }
        let etag = etag_of(&body);
        if header("if-none-match").as_deref() == Some(etag.as_str()) {
            return HttpResponse::NotModified()
                .insert_header(("etag", etag))
                .finish();
        }
        let accepts_gzip = header("accept-encoding").is_some_and(|v| v.contains("gzip"));
        if switches.gzip_index.load(Ordering::SeqCst) && accepts_gzip {
            return HttpResponse::Ok()
                .insert_header(("etag", etag))
                .insert_header(("last-modified", UPSTREAM_LAST_MODIFIED))
                .insert_header(("content-encoding", "gzip"))
                .body(gzip_of(body.as_bytes()));
        }
        return HttpResponse::Ok()
            .insert_header(("etag", etag))
            .insert_header(("last-modified", UPSTREAM_LAST_MODIFIED))
            .body(body);
    }
    let decoded: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let wanted = match segments.as_slice() {
        [_, "dl", name, version, "download"] => Some((name.to_string(), version.to_string(), None)),
        [_, "files", .., name, version, sum] => Some((
            name.to_string(),
            version.to_string(),
            sum.strip_suffix(".crate").map(str::to_string),
        )),
        _ => None,
    };
    let Some((name, version, sum)) = wanted else {
        return HttpResponse::NotFound().body("unknown path");
    };
    let file = state
        .files
        .lock()
        .unwrap()
        .get(&(name.to_ascii_lowercase(), version))
        .cloned();
    let Some(file) = file else {
        return HttpResponse::NotFound().body("no such version");
    };
    if let Some(sum) = sum {
        if sum != super::registry::sha256_hex(&file) {
            return HttpResponse::BadRequest().body("checksum marker does not match");
        }
    }
    let mut body = file.to_vec();
    if switches.corrupt_downloads.load(Ordering::SeqCst) {
        let middle = body.len() / 2;
        body[middle] ^= 0xff;
    }
    let chunk_delay = switches.chunk_delay_ms.load(Ordering::SeqCst);
    let len = body.len() as u64;
    if switches.truncate_downloads.load(Ordering::SeqCst) {
        body.truncate(body.len() / 2);
    }
    let stall = switches.stall_mid_body_ms.load(Ordering::SeqCst);
    let chunks: Vec<Bytes> = body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
    let half = chunks.len() / 2;
    let numbered = chunks.into_iter().enumerate();
    let stream = futures_util::stream::unfold(numbered, move |mut chunks| async move {
        let (n, chunk) = chunks.next()?;
        if chunk_delay > 0 {
            actix_web::rt::time::sleep(Duration::from_millis(chunk_delay)).await;
        }
        if stall > 0 && n == half {
            actix_web::rt::time::sleep(Duration::from_millis(stall)).await;
        }
        Some((Ok::<_, std::io::Error>(chunk), chunks))
    });
    HttpResponse::Ok()
        .content_type("application/gzip")
        .no_chunking(len)
        .streaming(stream)
}

/// The web API's answer to `req`, when it is a web API request and the
/// upstream serves the API; `None` for everything else.
fn web_api(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    let rest = req.uri().path().strip_prefix("/api/v1/crates")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let name = match segments.as_slice() {
        [] => None,
        [name] => Some(name.to_ascii_lowercase()),
        _ => return None,
    };
    if !state.api {
        return Some(HttpResponse::NotFound().body("no web API here"));
    }
    let fail = state.switches.api_fail_status.load(Ordering::SeqCst);
    if fail != 0 {
        let status = actix_web::http::StatusCode::from_u16(fail).unwrap();
        return Some(HttpResponse::build(status).body("test upstream API failing on purpose"));
    }
    let index = state.index.lock().unwrap();
    let summary = |name: &str| {
        let (status, body) = index.get(name)?;
        (*status == 200).then(|| crate_summary(body))?
    };
    match name {
        Some(name) => Some(match summary(&name) {
            Some(krate) => HttpResponse::Ok().json(serde_json::json!({
                "crate": krate,
                "versions": [],
                "keywords": [],
                "categories": [],
            })),
            None => HttpResponse::NotFound().json(serde_json::json!({
                "errors": [{ "detail": format!("crate `{name}` does not exist") }]
            })),
        }),
        None => {
            let params: HashMap<String, String> =
                web::Query::<HashMap<String, String>>::from_query(req.query_string())
                    .map(web::Query::into_inner)
                    .unwrap_or_default();
            let q = params.get("q").cloned().unwrap_or_default().to_lowercase();
            let per_page: usize = params
                .get("per_page")
                .and_then(|n| n.parse().ok())
                .unwrap_or(10);
            let mut names: Vec<&String> = index.keys().filter(|name| name.contains(&q)).collect();
            names.sort();
            let crates: Vec<serde_json::Value> = names
                .iter()
                .filter_map(|name| summary(name))
                .take(per_page)
                .collect();
            Some(HttpResponse::Ok().json(serde_json::json!({
                "crates": crates,
                "meta": { "total": names.len(), "next_page": null, "prev_page": null },
            })))
        }
    }
}

/// A crate as the web API describes it, from its index file: its name as
/// published, its highest version that is not yanked, a description made
/// from its name.
fn crate_summary(index_file: &str) -> Option<serde_json::Value> {
    let lines: Vec<serde_json::Value> = index_file
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let release = |line: &serde_json::Value| {
        let vers = line["vers"].as_str().unwrap_or("0.0.0");
        let core = vers.split(['-', '+']).next().unwrap_or("");
        let numbers: Vec<u64> = core.split('.').filter_map(|n| n.parse().ok()).collect();
        numbers
    };
    let newest = lines
        .iter()
        .filter(|line| line["yanked"] != true)
        .max_by_key(|line| release(line))?;
    let name = newest["name"].as_str()?;
    let version = newest["vers"].as_str()?;
    Some(serde_json::json!({
        "id": name,
        "name": name,
        "max_version": version,
        "newest_version": version,
        "max_stable_version": version,
        "description": format!("the {name} crate of the test upstream"),
        "downloads": 0,
        "recent_downloads": 0,
        "exact_match": false,
    }))
}

impl TestUpstream {
    /// Serves every file below `dir` as the index file of the crate it is
    /// named after (a sparse index laid out by the prefix rule, e.g. a copy of
    /// a real one); returns how many files were loaded.
    pub fn serve_index_dir(&self, dir: &std::path::Path) -> usize {
        let mut loaded = 0;
        for path in super::files_below(dir) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "config.json" {
                continue;
            }
            let body = std::fs::read_to_string(&path).expect("index file");
            self.set_index(&name, 200, &body);
            loaded += 1;
        }
        loaded
    }
}
