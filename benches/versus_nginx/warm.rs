//! Warming a server (every index file, plain and gzip, and every crate once)
//! and checking that it then answers from its cache.

use std::time::Instant;

use reqwest::header::ACCEPT_ENCODING;

use support::bench::{fail, WARM_CONCURRENCY};

use crate::generated::BenchRegistry;
use crate::{log, REQUEST_TIMEOUT};

/// An HTTP client with no proxy and raw bodies, pooled for warming.
pub fn http_client() -> reqwest::Client {
    support::bench::http_client(WARM_CONCURRENCY)
}

/// GETs every path once, `WARM_CONCURRENCY` at a time; the errors.
pub async fn fetch_all(
    client: &reqwest::Client,
    base: &str,
    paths: &[String],
    gzip: bool,
) -> Vec<String> {
    support::bench::fetch_all(client, base, paths, gzip, REQUEST_TIMEOUT)
        .await
        .1
}

/// Fetches every index file (plain and gzip'd, so that the mirror has
/// compressed each once, as it would in steady state) and every crate once.
pub async fn warm(server: &str, base: &str, registry: &BenchRegistry) {
    let client = http_client();
    let started = Instant::now();
    let mut errors = fetch_all(&client, base, &registry.index_paths, false).await;
    errors.extend(fetch_all(&client, base, &registry.index_paths, true).await);
    let mut crates = registry.download_paths.clone();
    crates.extend(registry.large.iter().map(|(path, _)| path.clone()));
    errors.extend(fetch_all(&client, base, &crates, false).await);
    if let Some(first) = errors.first() {
        fail(&format!(
            "warming {server} failed ({} errors), first: {first}",
            errors.len()
        ));
    }
    log(&format!(
        "warmed {server}: {} index files and {} crates in {:.1?}",
        registry.index_paths.len(),
        crates.len(),
        started.elapsed()
    ));
}

/// Checks that the server now answers an index file and a crate from its
/// cache: a warm-up that left them uncached would make the runs measure the
/// upstream instead.
pub async fn check_cached(server: &str, base: &str, header: &str, registry: &BenchRegistry) {
    let client = http_client();
    let probes = [
        &registry.index_paths[registry.index_paths.len() / 2],
        &registry.download_paths[0],
    ];
    for path in probes {
        let url = format!("{base}{path}");
        let response = client
            .get(&url)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("GET {url}: {e}")));
        let cache = response
            .headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        if cache != "HIT" {
            fail(&format!(
                "{server}: {path} answered with {header}: {cache} after warming"
            ));
        }
    }
}

/// What a server sends for one index file, plain and with `Accept-Encoding: gzip`.
pub struct Encoding {
    pub source: String,
    pub content_type: String,
    pub plain_bytes: usize,
    /// `Content-Encoding` of the gzip request (`-` for none).
    pub gzip_encoding: String,
    pub gzip_bytes: usize,
}

/// Fetches the largest index file both ways and notes what came back, so the
/// report shows that both servers compressed (a server sending identity
/// bodies to gzip clients would make the gzip runs meaningless).
pub async fn encoding_check(source: &str, base: &str, path: &str) -> Encoding {
    let client = http_client();
    let url = format!("{base}{path}");
    let mut seen = Vec::new();
    for gzip in [false, true] {
        let mut request = client.get(&url).timeout(REQUEST_TIMEOUT);
        if gzip {
            request = request.header(ACCEPT_ENCODING, "gzip");
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("GET {url}: {e}")));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let (content_type, encoding) = (header("content-type"), header("content-encoding"));
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| fail(&format!("GET {url}: body: {e}")));
        seen.push((content_type, encoding, body.len()));
    }
    let (gzip_encoding, gzip_bytes) = (seen[1].1.clone(), seen[1].2);
    let (content_type, _, plain_bytes) = seen.swap_remove(0);
    Encoding {
        source: source.to_string(),
        content_type,
        plain_bytes,
        gzip_encoding,
        gzip_bytes,
    }
}
