//! The private-mode gate, attached to each protected scope and resource in
//! `routes` (not to the whole app): access is decided by the route that actually
//! matched — after actix decoded the path — so no spelling of a path can reach a
//! handler without passing the gate that handler's route carries. Probes and the
//! dashboard page carry none. The rules themselves live in
//! [`crate::auth::AccessPolicy`].

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use crate::auth::{Decision, Protected};
use crate::AppState;

type Gated<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

/// Index files and downloads.
pub async fn registry<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Gated<B> {
    gate(Protected::Registry, req, next).await
}

/// The git index.
pub async fn git<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Gated<B> {
    gate(Protected::Git, req, next).await
}

/// `/metrics`.
pub async fn metrics<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Gated<B> {
    gate(Protected::Metrics, req, next).await
}

/// `/api/stats`.
pub async fn stats<B: MessageBody>(req: ServiceRequest, next: Next<B>) -> Gated<B> {
    gate(Protected::Stats, req, next).await
}

async fn gate<B: MessageBody>(route: Protected, req: ServiceRequest, next: Next<B>) -> Gated<B> {
    // Without state (never in `serve`) there is nothing to check against; refuse
    // rather than open.
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        let refusal = HttpResponse::InternalServerError().finish();
        return Ok(req.into_response(refusal).map_into_right_body());
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let refusal = match state.facing.access.decide(route, authorization) {
        Decision::Granted => return Ok(next.call(req).await?.map_into_left_body()),
        Decision::Challenge => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, challenge(route, state)))
            .content_type("text/plain; charset=utf-8")
            .body("authentication required\n"),
        Decision::Forbidden => HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .body("this token does not open this route\n"),
    };
    Ok(req.into_response(refusal).map_into_right_body())
}

/// The `WWW-Authenticate` value each kind of client answers: cargo's login
/// hint (from `public-url`, which private mode requires, never from the
/// request), git's Basic prompt, a bearer challenge for scrapers.
fn challenge(route: Protected, state: &AppState) -> HeaderValue {
    let text = match (route, &state.facing.public_url) {
        (Protected::Registry, Some(url)) => format!("Cargo login_url=\"{url}/\""),
        (Protected::Registry, None) => "Cargo".to_string(),
        (Protected::Git, _) => "Basic realm=\"crate-mirror\"".to_string(),
        (Protected::Metrics | Protected::Stats, _) => "Bearer realm=\"crate-mirror\"".to_string(),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Cargo"))
}
