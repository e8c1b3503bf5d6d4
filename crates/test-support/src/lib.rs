//! What crate-mirror's integration tests and benches share: a generated
//! registry, a test upstream serving it, the mirror binary, nginx, a cargo
//! driver, and (in `bench`) the benches' own plumbing. A crate of its own so
//! that each test and bench links one copy instead of including the files.

use std::path::{Path, PathBuf};

pub mod bench;
pub mod cargo;
pub mod faults;
pub mod mirror;
pub mod nginx;
pub mod procfs;
pub mod registry;
pub mod s3;
pub mod tls;
pub mod upstream;

/// An HTTP client for tests: no automatic decompression, no proxies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .gzip(false)
        .build()
        .expect("client")
}

/// Sends `request` and reads its body as JSON, failing the test on any error.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON body")
}

/// Sample lines of the Prometheus exposition format: `name{labels}` → value.
pub fn parse_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            (series.to_string(), value.parse().expect("sample value"))
        })
        .collect()
}

/// A loopback port that was free a moment ago, for programs that must be
/// told a port up front (nginx's config, Garage's, a mirror's public URL).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The root package's directory (this crate lives in `crates/test-support`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root above crates/test-support")
        .to_path_buf()
}
