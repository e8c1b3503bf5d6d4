//! The dashboard: plain HTML, CSS and JS from `static/`, compiled into the
//! binary (no build step, nothing to deploy beside it). It reads `/api/stats`
//! (and `/api/settings`, `/api/crates` on demand); when those refuse it (a
//! private mirror, or `metrics-tokens`), the page asks for a token and sends it
//! as a bearer token, so the page itself stays open, and so does the cargo
//! snippet it shows (`/api/cargo-config`).

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::metrics::Route;

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    let asset = |path: &str, body: &'static str, content_type: &'static str| {
        web::resource(path)
            .app_data(Route::Dashboard)
            .route(web::get().to(move || page(body, content_type)))
    };
    cfg.service(asset("/", INDEX_HTML, "text/html; charset=utf-8"))
        .service(asset(
            "/static/app.js",
            APP_JS,
            "text/javascript; charset=utf-8",
        ))
        .service(asset(
            "/static/style.css",
            STYLE_CSS,
            "text/css; charset=utf-8",
        ))
        .service(
            web::resource("/api/cargo-config")
                .app_data(Route::Dashboard)
                .route(web::get().to(super::operator::cargo_config)),
        );
}

async fn page(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(body)
}
