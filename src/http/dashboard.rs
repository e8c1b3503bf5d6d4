//! The dashboard: plain HTML, CSS and JS from `static/`, compiled into the
//! binary (no build step, nothing to deploy beside it). It reads `/api/stats`;
//! when that refuses it (a private mirror), the page asks for a token and sends
//! it as a bearer token, so the page itself stays open.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| page(INDEX_HTML, "text/html; charset=utf-8")),
    )
    .route(
        "/static/app.js",
        web::get().to(|| page(APP_JS, "text/javascript; charset=utf-8")),
    )
    .route(
        "/static/style.css",
        web::get().to(|| page(STYLE_CSS, "text/css; charset=utf-8")),
    );
}

async fn page(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(body)
}
