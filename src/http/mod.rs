//! The HTTP surface (actix): routes that translate requests into calls on the
//! domain services and their results into responses, nothing more.

mod auth;
mod body;
pub mod connection;
mod dashboard;
mod error;
mod facing;
mod git;
pub mod h2c;
mod operator;
mod origin;
mod registry_api;

use std::time::{Instant, UNIX_EPOCH};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::{guard, web, HttpMessage, HttpRequest, HttpResponse};

pub use body::WRITE_BUFFER;
pub use error::ApiError;
pub use facing::ClientFacing;

use crate::crates::CrateDownload;
use crate::index::cache::{IndexEntry, IndexFile, IndexLookup};
use crate::index::path::{decode_segment, parse_index_path, IndexRequest};
use crate::metrics::{method_label, ErrorKind, Route, UpstreamBytes};
use crate::names::{CrateName, CrateVersion};
use crate::{access_log, AppState};

/// Response header telling how the mirror answered (HIT, MISS, STALE, ...).
pub const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");
/// The Content-Type of index files (a constant: no parsing per response).
const INDEX_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

pub fn routes(cfg: &mut web::ServiceConfig) {
    use actix_web::middleware::from_fn;
    let get_or_head = || guard::Any(guard::Get()).or(guard::Head());
    // Every protected route carries its own gate (see `auth`): access follows
    // what the router matched, whatever the spelling of the path. Each also
    // carries its `Route`, the label `record_request` counts it under.
    cfg.service(
        web::resource("/health")
            .app_data(Route::Health)
            .route(web::route().guard(get_or_head()).to(health)),
    )
    .service(
        web::resource("/ready")
            .app_data(Route::Ready)
            .route(web::route().guard(get_or_head()).to(ready)),
    )
    .service(dashboard_json("/api/stats", stats))
    .service(dashboard_json("/api/settings", operator::settings))
    .service(dashboard_json("/api/crates", operator::cached_crates))
    .service(
        web::resource("/metrics")
            .app_data(Route::Metrics)
            .wrap(from_fn(auth::metrics))
            .route(web::get().to(metrics)),
    )
    // Prefix scopes rather than `{tail:.*}` patterns: no regex match per
    // request (the handlers parse the raw path themselves).
    .service(
        web::scope("/index")
            .app_data(Route::Index)
            .wrap(from_fn(auth::registry))
            .default_service(web::to(index)),
    )
    .service(
        web::scope("/api/v1/crates")
            .app_data(Route::Download)
            .wrap(from_fn(auth::registry))
            .configure(registry_api::routes)
            .default_service(web::to(download)),
    )
    .service(
        web::scope("/git")
            .app_data(Route::Git)
            .wrap(from_fn(auth::git))
            .configure(git::routes),
    )
    .configure(dashboard::routes)
    .default_service(web::to(fallback));
}

/// A JSON route of the dashboard: gated like `/api/stats` (it names crates
/// and settings), held to the mirror's own names like the page
/// (`dashboard::addressed`), counted under `stats`.
fn dashboard_json<F, Args>(path: &str, handler: F) -> impl actix_web::dev::HttpServiceFactory
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    use actix_web::middleware::from_fn;
    // The host check wraps the gate: a misdirected request is refused
    // whatever token it carries.
    web::resource(path)
        .app_data(Route::Stats)
        .wrap(from_fn(auth::stats))
        .wrap(from_fn(dashboard::addressed))
        .route(web::get().to(handler))
}

/// No route matched: 404 whatever the method, so an unknown path tells nothing.
async fn fallback() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// The raw path below `prefix` of a registry request. Registry routes answer
/// GET and HEAD only; the raw path is read, not actix's decoded one, so
/// encoded separators never become separators.
fn registry_path<'a>(req: &'a HttpRequest, prefix: &str) -> Result<&'a str, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    req.uri()
        .path()
        .strip_prefix(prefix)
        .ok_or(ApiError::NotFound)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let report = state.readiness.check().await;
    let status = if report.ready {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(report)
}

async fn stats(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let origin = origin::public_base(&req, &state)?;
    let mut stats = state.stats();
    stats["index_url"] = format!("{}/index/", origin.base).into();
    stats["mirror"] = state.operator.mirror();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::VARY, origin.vary))
        .json(stats))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.refresh_gauges();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}

/// `GET /index/config.json` and `GET /index/{prefix}/{name}`.
async fn index(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match parse_index_path(registry_path(&req, "/index/")?)? {
        IndexRequest::Config => {
            // Its own label, though it shares the index's scope.
            req.extensions_mut().insert(Route::Config);
            config_json(&req, &state).await
        }
        IndexRequest::File(name) => {
            let lookup = state.index.get(&name).await?;
            // Only names that exist count toward "most requested": made-up
            // ones would otherwise fill the list (and push the real ones out).
            if matches!(*lookup.entry, IndexEntry::Found(_)) {
                state.metrics.activity.crate_requested(name.key());
            }
            // The plain body only for a client that does not take gzip: it
            // is made from the compressed copy (or a recent one reused).
            let plain = if accepts_gzip(req.headers()) {
                None
            } else {
                Some(state.index.plain_for_client(&lookup.entry).await?)
            };
            Ok(index_response(&req, lookup, plain))
        }
    }
}

/// How long `config.json` waits for the upstream's when none is known yet (the
/// first start on a new data dir): only to know whether to announce `api`.
const CONFIG_UPSTREAM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Our `config.json`: `dl` is the mirror, and so is `api` when the upstream
/// has a web API to pass searches to.
async fn config_json(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, ApiError> {
    let origin = origin::public_base(req, state)?;
    let mut body = serde_json::json!({ "dl": format!("{}/api/v1/crates", origin.base) });
    let upstream = state.upstream.config_within(CONFIG_UPSTREAM_WAIT).await;
    if upstream.is_some_and(|config| config.api.is_some()) {
        body["api"] = origin.base.clone().into();
    }
    if state.facing.access.is_private() {
        body["auth-required"] = true.into();
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, origin.vary))
        .json(body))
}

/// The response for an index lookup (public for the hot-path benchmarks).
/// `plain` is the plain body, which only a client that does not accept gzip
/// needs (see `accepts_gzip`); without it such a client gets a 500.
pub fn index_response(
    req: &HttpRequest,
    lookup: IndexLookup,
    plain: Option<bytes::Bytes>,
) -> HttpResponse {
    let cache = (X_CACHE, HeaderValue::from_static(lookup.outcome.as_str()));
    let entry = match &*lookup.entry {
        IndexEntry::Found(file) => file,
        IndexEntry::Missing(refusal) => {
            let status = actix_web::http::StatusCode::from_u16(refusal.status)
                .unwrap_or(actix_web::http::StatusCode::NOT_FOUND);
            return HttpResponse::build(status)
                .insert_header(cache)
                .content_type("text/plain")
                .body("crate not found\n");
        }
    };
    let not_modified = is_not_modified(req.headers(), entry);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header(cache)
        .insert_header((header::ETAG, entry.etag.as_str()))
        .insert_header((header::LAST_MODIFIED, entry.last_modified.as_str()))
        .insert_header((header::VARY, HeaderValue::from_static("Accept-Encoding")));
    if not_modified {
        return response.finish();
    }
    response.insert_header((header::CONTENT_TYPE, INDEX_CONTENT_TYPE));
    if accepts_gzip(req.headers()) {
        let mut response = response
            .insert_header((header::CONTENT_ENCODING, HeaderValue::from_static("gzip")))
            .body(body::SlicedBody::new(entry.gzip_body().clone()));
        // Counted as the upstream sends the file (its plain length when it
        // does not gzip), for the bytes avoided.
        response
            .extensions_mut()
            .insert(UpstreamBytes(entry.upstream_gzip_len()));
        response
    } else {
        match plain {
            Some(plain) => response.body(body::SlicedBody::new(plain)),
            None => HttpResponse::InternalServerError().finish(),
        }
    }
}

/// `If-None-Match` decides when present (as cargo sends it); else `If-Modified-Since`.
fn is_not_modified(headers: &HeaderMap, entry: &IndexFile) -> bool {
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        return value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == entry.etag);
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match since {
        Some(since) => {
            let changed = entry
                .changed_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let since = since
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            changed <= since
        }
        None => false,
    }
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let zero_q = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero_q
    })
}

/// `GET /api/v1/crates/{name}/{version}/download`.
async fn download(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let raw = registry_path(&req, "/api/v1/crates/")?;
    let segments: Vec<&str> = raw.split('/').collect();
    let [name, version, "download"] = segments[..] else {
        return Err(ApiError::NotFound);
    };
    let name = CrateName::parse(&decode_segment(name)?)?;
    let version = CrateVersion::parse(&decode_segment(version)?)?;
    let download = state.crates.download(&name, &version).await?;
    // Counted once the crate and version proved to exist (see `index`).
    state.metrics.activity.crate_requested(name.key());
    let (len, body, outcome) = match download {
        CrateDownload::Redirect(url) => {
            return Ok(HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, url))
                .insert_header((X_CACHE, "HIT"))
                .finish())
        }
        CrateDownload::Stream { len, body, outcome } => (len, body, outcome),
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type("application/gzip")
        .insert_header((X_CACHE, outcome.as_str()));
    Ok(response.body(body::SlicedBody::stream(len, body)))
}

/// Longest request target (path and query) accepted; real ones are under 200 bytes.
const MAX_URI: usize = 2048;
/// Largest total of request header bytes accepted, pseudo-headers included.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// What each header costs on top of its name and value (`: ` and CRLF).
const HEADER_OVERHEAD: usize = 4;

/// Whether a GET or HEAD comes with a chunked body. Cargo never sends one,
/// and a body the handler does not read is still decoded by the server: a
/// malformed chunk would then end the connection with no answer at all while
/// the handler waits for the upstream. Refused up front with a 400 instead.
/// (A body of a declared length is read and dropped like any other; an h2c
/// upgrade request may carry one.)
fn chunked_read(req: &ServiceRequest) -> bool {
    let method = req.method();
    let reads = method == actix_web::http::Method::GET || method == actix_web::http::Method::HEAD;
    reads && req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// The bytes of the request's pseudo-headers other than `:path` (which
/// `MAX_URI` bounds): over h2 `:method`, `:authority` and `:scheme` are
/// headers like any other and may be as long as the connection allows; over
/// HTTP/1.1 the method comes in the request line, counted here too.
fn pseudo_header_bytes(req: &ServiceRequest) -> usize {
    let uri = req.uri();
    let pseudo = |name: &str, value: Option<&str>| {
        value.map_or(0, |v| name.len() + v.len() + HEADER_OVERHEAD)
    };
    pseudo(":method", Some(req.method().as_str()))
        + pseudo(":authority", uri.authority().map(|a| a.as_str()))
        + pseudo(":scheme", uri.scheme_str())
}

/// Refuses oversized request targets (414), header sets (431) and reads
/// with a chunked body (400) before any routing or parsing.
pub async fn limit_request_size(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
        .sum::<usize>()
        + pseudo_header_bytes(&req);
    let refusal = if uri_len > MAX_URI {
        Some(HttpResponse::UriTooLong().body("request target too long\n"))
    } else if header_bytes > MAX_HEADER_BYTES {
        Some(
            HttpResponse::build(actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
                .body("request headers too large\n"),
        )
    } else if chunked_read(&req) {
        Some(HttpResponse::BadRequest().body("a GET or HEAD request carries no chunked body\n"))
    } else {
        None
    };
    match refusal {
        Some(response) => Ok(req.into_response(response).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// The route label of an answered request: the one its handler set (the
/// index scope's `config.json`), else the one its route carries, else
/// `other` (no route matched, or refused before routing).
fn route_of(req: &HttpRequest) -> Route {
    if let Some(route) = req.extensions().get::<Route>() {
        return *route;
    }
    req.app_data::<Route>().copied().unwrap_or(Route::Other)
}

/// Counts every request into the metrics and wraps its response body so
/// that its access-log line is written when the response ends (see
/// `crate::access_log`).
pub async fn record_request<B: MessageBody + Unpin>(
    req: ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<ServiceResponse<access_log::Logged<B>>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    // The Uri shares the request's buffer: cloning it copies no path bytes.
    let uri = req.uri().clone();
    let path = uri.path();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let facts = access_log::RequestFacts::of(&req, started, || {
        let proxies = &state.as_ref()?.facing.trusted_proxies;
        origin::forwarded_client(req.request(), proxies)
    });
    let response = next.call(req).await?;
    let status = response.status();
    let elapsed = started.elapsed();
    if let Some(state) = state {
        let matched = route_of(response.request());
        let route = matched.as_str();
        let metrics = &state.metrics;
        metrics
            .http
            .requests
            .with_label_values(&[route, method_label(method.as_str()), status.as_str()])
            .inc();
        metrics
            .http
            .duration
            .with_label_values(&[route, status.as_str()])
            .observe(elapsed.as_secs_f64());
        if let BodySize::Sized(bytes) = response.response().body().size() {
            if method != Method::HEAD {
                let http = &metrics.http;
                http.served_bytes.with_label_values(&[route]).inc_by(bytes);
                let from_upstream = response
                    .response()
                    .extensions()
                    .get::<UpstreamBytes>()
                    .map_or(bytes, |sent| sent.0);
                http.served_upstream_bytes
                    .with_label_values(&[route])
                    .inc_by(from_upstream);
            }
        }
        if let Some(kind) = ErrorKind::of(matched, status.as_u16()) {
            metrics
                .activity
                .record_error(kind, method.as_str(), path, status.as_u16());
        }
    }
    Ok(response.map_body(|head, body| {
        let cache = head.headers.get(X_CACHE);
        access_log::Logged::new(body, facts, status.as_u16(), cache, elapsed)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_static(value));
        map
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers(header::ACCEPT_ENCODING, "gzip")));
        assert!(accepts_gzip(&headers(
            header::ACCEPT_ENCODING,
            "br, GZIP;q=0.5"
        )));
        assert!(accepts_gzip(&headers(header::ACCEPT_ENCODING, "*")));
        assert!(!accepts_gzip(&headers(header::ACCEPT_ENCODING, "gzip;q=0")));
        assert!(!accepts_gzip(&headers(header::ACCEPT_ENCODING, "identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
