//! The read-only part of the registry web API, passed through to the
//! upstream's own API (the `api` of its config.json): crate search (what
//! `cargo search` asks) and one crate's metadata. Everything else of that API
//! (publish, yank, owners) writes, and a mirror refuses it.
//!
//! What a client sent is checked and rebuilt here, never passed on as sent:
//! a name is a [`CrateName`], a search keeps `q`, `per_page` and `page` only,
//! each checked and encoded again. The upstream host comes from the
//! upstream's config.json (see [`UpstreamClient::fetch_api`]). Successful
//! answers are kept briefly in memory, so a burst of the same search (a team,
//! a CI matrix) asks the upstream once; concurrent misses share one request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

use crate::blocking::off_async;
use crate::metrics::Metrics;
use crate::names::CrateName;
use crate::upstream::{ApiFetch, Cause, UpstreamClient, UpstreamError};

/// How long an answer is served from memory: about as long as an index file
/// is fresh by default, so what search says and what resolves agree.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Bytes of answers kept at most (a search answer is a few KB, one crate's
/// metadata up to a few MB).
const CACHE_BYTES: u64 = 32 << 20;
/// Longest search text accepted, in bytes once decoded.
const MAX_QUERY_LEN: usize = 256;
/// Most results per page (the upstream's own limit is 100 too).
const MAX_PER_PAGE: u32 = 100;
/// Highest page number accepted: deeper pages are no search anyone reads.
const MAX_PAGE: u32 = 1000;

/// What every refused write is answered.
const READ_ONLY: &str = "this mirror is read-only";

/// Why an API request got no answer from the upstream's API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Publish, yank, unyank, owners.
    #[error("{READ_ONLY}")]
    ReadOnly,
    #[error("the upstream registry has no web API (its config.json names no `api`)")]
    NoApi,
    #[error("crate `{0}` does not exist")]
    CrateNotFound(String),
    #[error("upstream API: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("the upstream API answered with something that is not JSON")]
    NotJson,
}

/// A checked search: the only parameters passed on, each within bounds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchQuery {
    q: String,
    per_page: Option<u32>,
    page: Option<u32>,
}

impl SearchQuery {
    /// Parses a raw (still percent-encoded) query string such as
    /// `q=serde%20json&per_page=10`. `q` is required; an unknown or repeated
    /// parameter is refused rather than dropped, so nobody gets results for
    /// a question other than the one asked.
    pub fn parse(raw: &str) -> Result<Self, RegistryApiError> {
        let bad = |why: String| Err(RegistryApiError::BadRequest(why));
        let (mut q, mut per_page, mut page) = (None, None, None);
        for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode_form(value)
                .ok_or_else(|| RegistryApiError::BadRequest(format!("`{key}` is not UTF-8")))?;
            let slot = match key {
                "q" => {
                    if value.len() > MAX_QUERY_LEN {
                        return bad(format!("`q` is longer than {MAX_QUERY_LEN} bytes"));
                    }
                    if value.chars().any(char::is_control) {
                        return bad("`q` contains control characters".into());
                    }
                    q.replace(value).map(drop)
                }
                "per_page" => per_page
                    .replace(number(key, &value, MAX_PER_PAGE)?)
                    .map(drop),
                "page" => page.replace(number(key, &value, MAX_PAGE)?).map(drop),
                _ => {
                    return bad(format!(
                        "unsupported parameter `{}`: a search takes q, per_page and page",
                        key.chars().take(32).collect::<String>()
                    ))
                }
            };
            if slot.is_some() {
                return bad(format!("`{key}` is given twice"));
            }
        }
        let Some(q) = q else {
            return bad("a search needs `q`".into());
        };
        Ok(Self { q, per_page, page })
    }

    /// The query string sent upstream, encoded anew.
    fn encoded(&self) -> String {
        let mut out = format!("q={}", utf8_percent_encode(&self.q, NON_ALPHANUMERIC));
        if let Some(per_page) = self.per_page {
            out.push_str(&format!("&per_page={per_page}"));
        }
        if let Some(page) = self.page {
            out.push_str(&format!("&page={page}"));
        }
        out
    }
}

/// A form value: `+` is a space, then percent-decoding; `None` unless UTF-8.
fn decode_form(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|value| value.into_owned())
}

/// A whole number from 1 to `max`.
fn number(key: &str, value: &str, max: u32) -> Result<u32, RegistryApiError> {
    match value.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(RegistryApiError::BadRequest(format!(
            "`{key}` must be a number from 1 to {max}"
        ))),
    }
}

/// One read-only API request: also the key of its cached answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApiRequest {
    /// `GET /api/v1/crates?q=...`
    Search(SearchQuery),
    /// `GET /api/v1/crates/{name}`
    Crate(CrateName),
}

impl ApiRequest {
    /// The path and query below the upstream's `api` base.
    fn upstream_path(&self) -> String {
        match self {
            ApiRequest::Search(query) => format!("/api/v1/crates?{}", query.encoded()),
            // A checked name holds only `[A-Za-z0-9_-]`: nothing to encode.
            ApiRequest::Crate(name) => format!("/api/v1/crates/{name}"),
        }
    }

    /// The `endpoint` label of the metrics.
    fn endpoint(&self) -> &'static str {
        match self {
            ApiRequest::Search(_) => "search",
            ApiRequest::Crate(_) => "crate",
        }
    }
}

/// Whether an answer came from memory or from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiOutcome {
    Hit,
    Miss,
}

impl ApiOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiOutcome::Hit => "HIT",
            ApiOutcome::Miss => "MISS",
        }
    }
}

/// The pass-through, with its cache of answers.
pub struct RegistryApi {
    upstream: Arc<UpstreamClient>,
    answers: moka::future::Cache<ApiRequest, Bytes>,
    metrics: Arc<Metrics>,
}

impl RegistryApi {
    pub fn new(upstream: Arc<UpstreamClient>, metrics: Arc<Metrics>) -> Self {
        let answers = moka::future::Cache::builder()
            .max_capacity(CACHE_BYTES)
            .weigher(|_: &ApiRequest, body: &Bytes| u32::try_from(body.len()).unwrap_or(u32::MAX))
            .time_to_live(CACHE_TTL)
            .build();
        Self {
            upstream,
            answers,
            metrics,
        }
    }

    /// `GET /api/v1/crates?{raw_query}`.
    pub async fn search(&self, raw_query: &str) -> Result<(Bytes, ApiOutcome), RegistryApiError> {
        let query = self.checked("search", SearchQuery::parse(raw_query))?;
        self.answer(ApiRequest::Search(query)).await
    }

    /// `GET /api/v1/crates/{raw_name}`.
    pub async fn crate_info(
        &self,
        raw_name: &str,
    ) -> Result<(Bytes, ApiOutcome), RegistryApiError> {
        let name = CrateName::parse(raw_name)
            .map_err(|_| RegistryApiError::BadRequest("invalid crate name".into()));
        let name = self.checked("crate", name)?;
        self.answer(ApiRequest::Crate(name)).await
    }

    /// A write (publish, yank, unyank, owners): always refused, and counted.
    pub fn write(&self) -> RegistryApiError {
        self.count("write", "refused");
        RegistryApiError::ReadOnly
    }

    /// `parsed`, counting a refusal as a bad request.
    fn checked<T>(
        &self,
        endpoint: &str,
        parsed: Result<T, RegistryApiError>,
    ) -> Result<T, RegistryApiError> {
        if parsed.is_err() {
            self.count(endpoint, "bad_request");
        }
        parsed
    }

    /// The cached answer, or the upstream's (then cached when it is a 200).
    async fn answer(&self, request: ApiRequest) -> Result<(Bytes, ApiOutcome), RegistryApiError> {
        let endpoint = request.endpoint();
        let fetched = self
            .answers
            .entry(request.clone())
            .or_try_insert_with(self.fetch(request))
            .await;
        match fetched {
            Ok(entry) => {
                // Fresh: this call's fetch filled the entry.
                let outcome = if entry.is_fresh() {
                    ApiOutcome::Miss
                } else {
                    ApiOutcome::Hit
                };
                self.count(endpoint, &outcome.as_str().to_ascii_lowercase());
                Ok((entry.into_value(), outcome))
            }
            Err(err) => {
                let result = match *err {
                    RegistryApiError::CrateNotFound(_) => "not_found",
                    _ => "error",
                };
                self.count(endpoint, result);
                Err((*err).clone())
            }
        }
    }

    /// One upstream request; only a 200 whose body is JSON is an answer.
    async fn fetch(&self, request: ApiRequest) -> Result<Bytes, RegistryApiError> {
        match self.upstream.fetch_api(&request.upstream_path()).await? {
            ApiFetch::Found(body) => {
                let checked = body.clone();
                // Parsing a few MB is CPU work: off the async threads.
                let is_json = off_async(move || {
                    serde_json::from_slice::<serde::de::IgnoredAny>(&checked).is_ok()
                })
                .await;
                if is_json {
                    Ok(body)
                } else {
                    Err(RegistryApiError::NotJson)
                }
            }
            ApiFetch::Missing => match request {
                ApiRequest::Crate(name) => Err(RegistryApiError::CrateNotFound(name.to_string())),
                // A search that is not found is no search the upstream serves.
                ApiRequest::Search(_) => Err(UpstreamError::from(Cause::Status(404)).into()),
            },
            ApiFetch::NoApi => Err(RegistryApiError::NoApi),
        }
    }

    fn count(&self, endpoint: &str, result: &str) {
        self.metrics
            .api
            .requests
            .with_label_values(&[endpoint, result])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(raw: &str) -> Result<SearchQuery, RegistryApiError> {
        SearchQuery::parse(raw)
    }

    #[test]
    fn a_search_is_encoded_anew() {
        let query = search("q=serde+json&per_page=10").unwrap();
        assert_eq!(query.encoded(), "q=serde%20json&per_page=10");
        // cargo's own encoding (every non-alphanumeric byte) comes back as it went.
        let query = search("per_page=5&q=a%2Bb%26c%3Dd&page=2").unwrap();
        assert_eq!(query.encoded(), "q=a%2Bb%26c%3Dd&per_page=5&page=2");
        assert_eq!(search("q=").unwrap().encoded(), "q=");
        let query = search("q=%C3%A9t%C3%A9").unwrap();
        assert_eq!(query.q, "été");
        assert_eq!(
            ApiRequest::Search(query).upstream_path(),
            "/api/v1/crates?q=%C3%A9t%C3%A9"
        );
    }

    #[test]
    fn bad_searches_are_refused() {
        for raw in [
            "",
            "per_page=10",
            "q=a&q=b",
            "q=a&per_page=0",
            "q=a&per_page=101",
            "q=a&per_page=-1",
            "q=a&per_page=1e2",
            "q=a&page=0",
            "q=a&page=1001",
            "q=a&sort=downloads",
            "q=%ff",
            "q=a%00",
            "q=a%0Ab",
            &format!("q={}", "a".repeat(MAX_QUERY_LEN + 1)),
        ] {
            assert!(
                matches!(search(raw), Err(RegistryApiError::BadRequest(_))),
                "{raw:?} was accepted"
            );
        }
        assert!(search(&format!("q={}", "a".repeat(MAX_QUERY_LEN))).is_ok());
        assert!(search("q=a&per_page=100&page=1000").is_ok());
    }

    #[test]
    fn a_crate_path_is_the_checked_name() {
        let name = CrateName::parse("Serde_JSON-x").unwrap();
        assert_eq!(
            ApiRequest::Crate(name).upstream_path(),
            "/api/v1/crates/Serde_JSON-x"
        );
    }
}
