//! The dashboard: plain HTML, CSS and JS from `static/`, compiled into the
//! binary (no build step, nothing to deploy beside it). It reads `/api/stats`
//! (and `/api/settings`, `/api/crates` on demand); when those refuse it (a
//! private mirror, or `metrics-tokens`), the page asks for a token and sends it
//! as a bearer token, so the page itself stays open, and so does the cargo
//! snippet it shows (`/api/cargo-config`).
//!
//! The page and everything it reads answer only to the names the mirror is
//! known by when `public-url` is set (see [`addressed`]), and the page limits
//! itself to its own origin with a Content-Security-Policy: a mirror on a
//! developer's machine must not hand its figures and settings to any site
//! that points a DNS name at the loopback address.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse};

use crate::metrics::Route;
use crate::AppState;

/// The page's scripts, styles and requests come from the mirror itself (no
/// inline script or style; `data:` only for the empty icon), and no other
/// site may frame it.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../../static/index.html");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    let asset = |path: &str, body: &'static str, content_type: &'static str| {
        web::resource(path)
            .app_data(Route::Dashboard)
            .wrap(from_fn(addressed))
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
                .wrap(from_fn(addressed))
                .route(web::get().to(super::operator::cargo_config)),
        );
}

async fn page(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// Refuses (421) a dashboard request addressed to a name the mirror is not
/// known by: with `public-url` set, anything but its host and loopback names
/// (see `origin::addressed_to_mirror`). A page on another site that points
/// its own name at the mirror's address (DNS rebinding) is then same-origin
/// with nothing the mirror serves it. Registry routes never depend on the
/// Host with `public-url` set, and carry no such check.
pub async fn addressed<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let known = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| super::origin::addressed_to_mirror(req.request(), &state.facing));
    if known {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let refusal = HttpResponse::build(actix_web::http::StatusCode::MISDIRECTED_REQUEST)
        .content_type("text/plain; charset=utf-8")
        .body("this mirror's dashboard answers at its public URL\n");
    Ok(req.into_response(refusal).map_into_right_body())
}
