//! Smart HTTP for the git index: `GET /git/index/info/refs?service=git-upload-pack`
//! and `POST /git/index/git-upload-pack`. Read-only: receive-pack is refused.
//!
//! Upload-pack is the only route that reads a request body, so its bounds live
//! here: a size limit (before and after gzip) and a deadline for the whole body.

use std::io::Read;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::ApiError;
use crate::AppState;

/// Largest upload-pack request accepted as sent (wants and haves).
const MAX_REQUEST: usize = 8 << 20;
/// Largest upload-pack request after gzip decoding.
const MAX_DECODED_REQUEST: u64 = 64 << 20;
/// How long a client has to send the whole body once its head is in (the head
/// has its own limit, the server's client request timeout). A deadline for the
/// whole body rather than per read: a body trickling a byte at a time is never
/// idle, yet holds a connection and a buffer just the same. Git sends its
/// wants and haves in one go; even the largest accepted body needs under
/// 1 MB/s to make it.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Relative to the `/git` scope, which carries the access gate.
    cfg.route("/index/info/refs", web::get().to(info_refs))
        .route("/index/git-upload-pack", web::post().to(upload_pack));
}

/// Why a request body was not read to its end.
enum BodyRefusal {
    TooLarge,
    TimedOut,
    /// The connection failed or the framing was bad mid-body.
    Broken,
}

impl BodyRefusal {
    /// The rest of the body is unread, so the connection cannot carry another
    /// request: each refusal closes it.
    fn response(&self) -> HttpResponse {
        let (mut response, text) = match self {
            BodyRefusal::TooLarge => (HttpResponse::PayloadTooLarge(), "request body too large\n"),
            BodyRefusal::TimedOut => (
                HttpResponse::RequestTimeout(),
                "request body not received in time\n",
            ),
            BodyRefusal::Broken => (HttpResponse::BadRequest(), "request body incomplete\n"),
        };
        response
            .force_close()
            .content_type("text/plain; charset=utf-8")
            .body(text)
    }
}

/// Reads the whole body, at most `limit` bytes, within `BODY_TIMEOUT`.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, BodyRefusal> {
    // A declared length over the limit is refused before reading any of it.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyRefusal::TooLarge);
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| BodyRefusal::Broken)?;
            if body.len() + chunk.len() > limit {
                return Err(BodyRefusal::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(BodyRefusal::TimedOut))
}

/// Inflates a gzip request body, at most `MAX_DECODED_REQUEST` bytes of it.
fn gunzip(body: &[u8]) -> Result<web::Bytes, ApiError> {
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_DECODED_REQUEST + 1)
        .read_to_end(&mut decoded)
        .map_err(|_| ApiError::BadRequest("request body is not valid gzip"))?;
    if decoded.len() as u64 > MAX_DECODED_REQUEST {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(web::Bytes::from(decoded))
}

#[derive(serde::Deserialize)]
struct ServiceQuery {
    service: Option<String>,
}

async fn info_refs(
    state: web::Data<AppState>,
    query: web::Query<ServiceQuery>,
) -> Result<HttpResponse, ApiError> {
    let git = state.git.as_ref().ok_or(ApiError::NotFound)?;
    match query.service.as_deref() {
        Some("git-upload-pack") => {}
        Some(_) => return Err(ApiError::Forbidden("this git repository is read-only")),
        None => {
            return Err(ApiError::BadRequest(
                "only the smart HTTP protocol is served",
            ))
        }
    }
    let body = git.advertise_refs().await?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-git-upload-pack-advertisement")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}

async fn upload_pack(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let git = state.git.as_ref().ok_or(ApiError::NotFound)?;
    let body = match read_body(&req, payload, MAX_REQUEST).await {
        Ok(body) => body,
        Err(refusal) => return Ok(refusal.response()),
    };
    let gzipped = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let request = if gzipped {
        // Inflating up to 64 MiB is CPU work: off the async workers.
        web::block(move || gunzip(&body))
            .await
            // Only a panic or a shutdown cancels it: a server-side failure.
            .map_err(|_| {
                ApiError::Git(crate::git::GitError::Io(std::io::Error::other(
                    "decoding the request body was cancelled",
                )))
            })??
    } else {
        body
    };
    let pack = git.upload_pack(request).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-git-upload-pack-result")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(pack))
}
