//! Shared helpers for the integration tests: a generated registry, a test
//! upstream serving it, the mirror binary, and a cargo driver.
#![allow(dead_code)]

pub mod cargo;
pub mod faults;
pub mod mirror;
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
