//! A test upstream: a local sparse registry serving generated index files and
//! `.crate` files, with switches to slow it, fail it, stop it and count what it
//! was asked.

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

impl TestUpstream {
    pub fn start(specs: &[CrateSpec], dl_style: DlStyle) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind test upstream");
        let addr = listener.local_addr().expect("local addr");
        let base = format!("http://{addr}");
        let switches = Arc::new(Switches::default());
        let state = Arc::new(State {
            base: base.clone(),
            dl_style: Mutex::new(dl_style),
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
        upstream.publish_all(specs);
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
        return HttpResponse::Ok().json(serde_json::json!({ "dl": dl }));
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
