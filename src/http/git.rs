//! Smart HTTP for the git index: `GET /git/index/info/refs?service=git-upload-pack`
//! and `POST /git/index/git-upload-pack`. Read-only: receive-pack is refused.

use std::io::Read;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::ApiError;
use crate::AppState;

/// Largest upload-pack request accepted as sent (wants and haves).
const MAX_REQUEST: usize = 8 << 20;
/// Largest upload-pack request after gzip decoding.
const MAX_DECODED_REQUEST: u64 = 64 << 20;

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Relative to the `/git` scope, which carries the access gate.
    cfg.route("/index/info/refs", web::get().to(info_refs))
        .service(
            web::resource("/index/git-upload-pack")
                .app_data(web::PayloadConfig::new(MAX_REQUEST))
                .route(web::post().to(upload_pack)),
        );
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
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let git = state.git.as_ref().ok_or(ApiError::NotFound)?;
    let gzipped = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let request = if gzipped {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .take(MAX_DECODED_REQUEST + 1)
            .read_to_end(&mut decoded)
            .map_err(|_| ApiError::BadRequest("request body is not valid gzip"))?;
        if decoded.len() as u64 > MAX_DECODED_REQUEST {
            return Err(ApiError::PayloadTooLarge);
        }
        web::Bytes::from(decoded)
    } else {
        body
    };
    let pack = git.upload_pack(request).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-git-upload-pack-result")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(pack))
}
