//! The real-index fixture (`tests/fixtures/real-index`, see its README)
//! served the way a distant registry serves it: HTTPS with HTTP/2 by ALPN,
//! gzip'd index files with ETags, an added delay on every request, its own
//! `config.json`, and made-up `.crate` files whose checksums the served index
//! carries.
//! It counts what it is asked, so a benchmark can report upstream requests.

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::http::Version;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::fail;
use crate::server::ServerThread;

/// The fixture's place in the repository, below the workspace root.
const FIXTURE: &str = "tests/fixtures/real-index";

/// The fixture directory, in the repository (found from the support crate's
/// `CARGO_MANIFEST_DIR`, so a clone anywhere finds it). A missing fixture
/// fails the test that wanted it, in one line naming the path, and no other:
/// a panic, not an exit of the whole test binary.
pub fn fixture_dir() -> PathBuf {
    let dir = crate::workspace_root().join(FIXTURE);
    let tarball = dir.join("index.tar.gz");
    if !tarball.is_file() {
        panic!(
            "the real-index fixture is missing: no file {}",
            tarball.display()
        );
    }
    dir
}

/// The manifest (`Cargo.toml`) of one of the fixture's workloads (`web`,
/// `cli`, `gamedev`).
pub fn workload_manifest(workload: &str) -> String {
    let path = fixture_dir()
        .join("workloads")
        .join(workload)
        .join("Cargo.toml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the real-index fixture: {}: {e}", path.display()))
}

/// The fixture's index unpacked into a new temp dir (the fixture itself is
/// never written): the temp dir, to keep, and the `index/` dir in it.
pub fn unpack_index() -> (tempfile::TempDir, PathBuf) {
    let tarball = fixture_dir().join("index.tar.gz");
    let file = std::fs::File::open(&tarball)
        .unwrap_or_else(|e| panic!("the real-index fixture: {}: {e}", tarball.display()));
    let dir = tempfile::tempdir().expect("temp dir for the index");
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .unwrap_or_else(|e| panic!("the real-index fixture: unpack {}: {e}", tarball.display()));
    let root = dir.path().join("index");
    (dir, root)
}

/// A test CA and a certificate for 127.0.0.1 signed by it, in a temp dir.
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// What cargo (`http.cainfo`) and rustls (`SSL_CERT_FILE`) are told to trust.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    // Making one runs openssl and writes files: not a `Default` value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        crate::tls::make_certificates(dir.path());
        TestCa {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        }
    }
}

/// One index file as served: the body, its gzip form (made once, as a CDN
/// would hold it) and its ETag.
#[derive(Clone)]
pub struct IndexFile {
    /// Empty for a file held gzip'd only (`gzip_only`).
    pub body: Bytes,
    pub gzip: Bytes,
    pub etag: String,
}

impl IndexFile {
    fn new(body: Vec<u8>) -> Self {
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), Default::default());
        encoder.write_all(&body).expect("gzip in memory");
        let gzip = encoder.finish().expect("gzip in memory");
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..24]);
        IndexFile {
            body: body.into(),
            gzip: gzip.into(),
            etag,
        }
    }

    /// A file held gzip'd only: a synthetic set of 100,000 files would not
    /// fit in memory plain. A client that does not accept gzip gets it
    /// decompressed when it asks (the mirror always accepts gzip).
    pub fn gzip_only(gzip: Bytes, etag: String) -> Self {
        IndexFile {
            body: Bytes::new(),
            gzip,
            etag,
        }
    }

    /// The plain body: kept, or decompressed from the gzip'd one.
    fn plain(&self) -> Bytes {
        if !self.body.is_empty() {
            return self.body.clone();
        }
        let mut plain = Vec::new();
        match std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&self.gzip[..]),
            &mut plain,
        ) {
            Ok(_) => plain.into(),
            // Made by `gzip_only`'s caller from a body it compressed itself.
            Err(e) => fail(&format!("a synthetic index file does not decompress: {e}")),
        }
    }
}

/// Index files by lowercased path below `/index/` (`se/rd/serde`).
pub type IndexFiles = HashMap<String, IndexFile>;

/// The fixture unpacked into a temp dir (the fixture itself is read-only).
pub struct RealIndex {
    _dir: tempfile::TempDir,
    /// Raw bodies by path below `/index/`.
    raw: HashMap<String, Vec<u8>>,
}

impl RealIndex {
    pub fn unpack() -> Self {
        let (dir, root) = unpack_index();
        let mut raw = HashMap::new();
        for path in crate::files_below(&root) {
            let key = path
                .strip_prefix(&root)
                .expect("below the root")
                .to_string_lossy()
                .to_ascii_lowercase();
            raw.insert(key, std::fs::read(&path).expect("read an index file"));
        }
        if raw.is_empty() {
            panic!("the real-index fixture unpacked to no files");
        }
        RealIndex { _dir: dir, raw }
    }

    /// Keeps only the files at `paths` (below `/index/`): a test that needs a
    /// few files skips compressing all 626 of them.
    pub fn only(mut self, paths: &[&str]) -> Self {
        self.raw.retain(|path, _| paths.contains(&path.as_str()));
        self
    }

    pub fn file_count(&self) -> usize {
        self.raw.len()
    }

    /// The files as the fixture has them (real checksums: enough to resolve,
    /// not to download).
    pub fn files(&self) -> IndexFiles {
        self.raw
            .iter()
            .map(|(path, body)| (path.clone(), IndexFile::new(body.clone())))
            .collect()
    }

    /// The files with the `cksum` of every version in `crates` replaced by
    /// the sha256 of its made-up file. Only those lines change, byte for byte
    /// otherwise as the fixture has them: making up files for all 26,000
    /// versions would take minutes and gigabytes.
    pub fn files_with_checksums(&self, crates: &CrateFiles) -> IndexFiles {
        self.raw
            .iter()
            .map(|(path, body)| {
                let text = String::from_utf8_lossy(body);
                let mut out = String::with_capacity(text.len());
                for line in text.lines() {
                    out.push_str(&rewrite_line(line, crates));
                    out.push('\n');
                }
                (path.clone(), IndexFile::new(out.into_bytes()))
            })
            .collect()
    }
}

fn rewrite_line(line: &str, crates: &CrateFiles) -> String {
    let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let (Some(name), Some(vers), Some(old)) = (
        entry["name"].as_str(),
        entry["vers"].as_str(),
        entry["cksum"].as_str(),
    ) else {
        return line.to_string();
    };
    match crates.files.get(&(name.to_string(), vers.to_string())) {
        Some(file) => line.replacen(old, &file.sha256, 1),
        None => line.to_string(),
    }
}

/// SplitMix64: a fast, good enough stream of pseudo-random words.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The made-up `.crate` size of a version, the same every time: 10 KB ×
/// 300^(u²) for a uniform u drawn from its name and version, so 10 KB to 3 MB,
/// median about 40 KB, one in ten above 1 MB, mean about 300 KB: roughly the
/// spread of real compressed crates.
pub fn crate_size(name: &str, vers: &str) -> usize {
    let digest = Sha256::digest(format!("{name}@{vers}").as_bytes());
    let mut state = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let u = (splitmix(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
    (10_000.0 * 300f64.powf(u * u)) as usize
}

struct CrateFile {
    path: PathBuf,
    sha256: String,
}

/// Made-up `.crate` files in a temp dir, served as they are (as a CDN serves
/// files): real tarballs (`cargo fetch` unpacks them and reads the manifest)
/// padded with incompressible bytes to `crate_size`.
pub struct CrateFiles {
    _dir: tempfile::TempDir,
    files: HashMap<(String, String), CrateFile>,
    pub bytes: u64,
}

impl CrateFiles {
    pub fn generate(versions: &BTreeSet<(String, String)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for .crate files");
        let mut files = HashMap::new();
        let mut bytes = 0;
        for (name, vers) in versions {
            let mut spec = crate::registry::CrateSpec::new(name, vers);
            spec.padding = crate_size(name, vers);
            let tarball = crate::registry::tarball(&spec);
            let path = dir.path().join(format!("{name}-{vers}.crate"));
            std::fs::write(&path, &tarball).expect("write a .crate file");
            bytes += tarball.len() as u64;
            let sha256 = crate::registry::sha256_hex(&tarball);
            files.insert((name.clone(), vers.clone()), CrateFile { path, sha256 });
        }
        CrateFiles {
            _dir: dir,
            files,
            bytes,
        }
    }

    fn paths(&self) -> HashMap<(String, String), PathBuf> {
        self.files
            .iter()
            .map(|(key, file)| (key.clone(), file.path.clone()))
            .collect()
    }
}

/// What the upstream was asked, since the last reset.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Index file requests (config.json not included), whatever the answer.
    pub index: u64,
    /// Of those, answered 304 Not Modified.
    pub not_modified: u64,
    pub config: u64,
    pub downloads: u64,
    pub download_bytes: u64,
    /// TLS connections accepted.
    pub connections: u64,
    pub http2: u64,
    pub http1: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            index: self.index + o.index,
            not_modified: self.not_modified + o.not_modified,
            config: self.config + o.config,
            downloads: self.downloads + o.downloads,
            download_bytes: self.download_bytes + o.download_bytes,
            connections: self.connections + o.connections,
            http2: self.http2 + o.http2,
            http1: self.http1 + o.http1,
        }
    }
}

#[derive(Default)]
struct Counters {
    index: AtomicU64,
    not_modified: AtomicU64,
    config: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
    connections: AtomicU64,
    http2: AtomicU64,
    http1: AtomicU64,
}

impl Counters {
    fn all(&self) -> [&AtomicU64; 8] {
        [
            &self.index,
            &self.not_modified,
            &self.config,
            &self.downloads,
            &self.download_bytes,
            &self.connections,
            &self.http2,
            &self.http1,
        ]
    }
}

struct State {
    /// `https://127.0.0.1:PORT`.
    base: String,
    files: RwLock<Arc<IndexFiles>>,
    crates: RwLock<Arc<HashMap<(String, String), PathBuf>>>,
    delay_ms: AtomicU64,
    counters: Arc<Counters>,
}

/// The test upstream, on its own thread and actix runtime; stopped when dropped.
pub struct RealUpstream {
    state: Arc<State>,
    /// Held to stop the server when dropped.
    _server: ServerThread,
    /// `https://127.0.0.1:PORT/index/`.
    pub index_url: String,
}

/// rustls settings like the mirror's own (`src/lib.rs`): HTTP/2 first by ALPN.
fn tls_config(ca: &TestCa) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&ca.cert)
        .expect("read the server certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse the server certificate");
    let key = PrivateKeyDer::from_pem_file(&ca.key).expect("read the server key");
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a usable certificate and key");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tls
}

impl RealUpstream {
    pub fn start(files: IndexFiles, ca: &TestCa) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let addr = listener.local_addr().expect("local addr");
        let counters = Arc::new(Counters::default());
        let state = Arc::new(State {
            base: format!("https://{addr}"),
            files: RwLock::new(Arc::new(files)),
            crates: RwLock::new(Arc::new(HashMap::new())),
            delay_ms: AtomicU64::new(0),
            counters: counters.clone(),
        });
        let tls = tls_config(ca);
        let server = ServerThread::start(listener, Some(tls), state.clone(), handle, move || {
            counters.connections.fetch_add(1, Ordering::Relaxed);
        });
        let index_url = format!("{}/index/", state.base);
        RealUpstream {
            state,
            _server: server,
            index_url,
        }
    }

    /// Serves `files` from now on.
    pub fn set_files(&self, files: IndexFiles) {
        *self.state.files.write().expect("files lock") = Arc::new(files);
    }

    /// Serves these `.crate` files from now on (none at first).
    pub fn set_crates(&self, crates: &CrateFiles) {
        *self.state.crates.write().expect("crates lock") = Arc::new(crates.paths());
    }

    /// Delays every response from now on by `ms`.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests received since the last reset, without resetting.
    pub fn requests(&self) -> u64 {
        let c = &self.state.counters;
        c.http1.load(Ordering::SeqCst) + c.http2.load(Ordering::SeqCst)
    }

    /// The counts since the last reset, and a new start from zero.
    pub fn take_counts(&self) -> Counts {
        let c = &self.state.counters;
        let [index, not_modified, config, downloads, download_bytes, connections, http2, http1] =
            c.all().map(|n| n.swap(0, Ordering::SeqCst));
        Counts {
            index,
            not_modified,
            config,
            downloads,
            download_bytes,
            connections,
            http2,
            http1,
        }
    }
}

async fn handle(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let counters = &state.counters;
    if req.version() == Version::HTTP_2 {
        counters.http2.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.http1.fetch_add(1, Ordering::Relaxed);
    }
    // Distance: every answer, 304s and downloads included, waits this long.
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        actix_web::rt::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path();
    if path == "/index/config.json" {
        counters.config.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::Ok().json(serde_json::json!({ "dl": format!("{}/dl", state.base) }));
    }
    if let Some(rest) = path.strip_prefix("/index/") {
        counters.index.fetch_add(1, Ordering::Relaxed);
        let files = state.files.read().expect("files lock").clone();
        let Some(file) = files.get(&rest.to_ascii_lowercase()) else {
            return HttpResponse::NotFound().body("no such crate");
        };
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        if header("if-none-match") == file.etag {
            counters.not_modified.fetch_add(1, Ordering::Relaxed);
            return HttpResponse::NotModified()
                .insert_header(("etag", file.etag.clone()))
                .finish();
        }
        let mut response = HttpResponse::Ok();
        response
            .insert_header(("etag", file.etag.clone()))
            .insert_header(("vary", "accept-encoding"))
            .content_type("text/plain");
        return if header("accept-encoding").contains("gzip") {
            response
                .insert_header(("content-encoding", "gzip"))
                .body(file.gzip.clone())
        } else {
            response.body(file.plain())
        };
    }
    let segments: Vec<&str> = path.split('/').collect();
    if let ["", "dl", name, vers, "download"] = segments.as_slice() {
        let key = (name.to_string(), vers.to_string());
        let path = state.crates.read().expect("crates lock").get(&key).cloned();
        let Some(path) = path else {
            return HttpResponse::NotFound().body("no such version");
        };
        let Ok(Ok(body)) = web::block(move || std::fs::read(path)).await else {
            return HttpResponse::InternalServerError().body("cannot read the file");
        };
        counters.downloads.fetch_add(1, Ordering::Relaxed);
        counters
            .download_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        return HttpResponse::Ok()
            .content_type("application/gzip")
            .body(body);
    }
    HttpResponse::NotFound().body("unknown path")
}
