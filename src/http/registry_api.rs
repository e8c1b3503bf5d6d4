//! The registry web API routes below `/api/v1/crates` (mounted in that scope,
//! behind its access gate, next to downloads): search and crate metadata
//! answered by `crate::registry_api`, every write refused. Errors here are in
//! cargo's JSON format (`{"errors":[{"detail":"..."}]}`, see `error`), which
//! cargo prints as the registry's own message.

use actix_web::http::header::HeaderValue;
use actix_web::{guard, web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::{ApiError, X_CACHE};
use crate::metrics::Route;
use crate::registry_api::ApiOutcome;
use crate::AppState;

/// The routes, relative to the `/api/v1/crates` scope. Downloads
/// (`/{name}/{version}/download`) match none of them and go to the scope's
/// default service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let get_or_head = || guard::Any(guard::Get()).or(guard::Head());
    // Any other method on a resource is a write: its default service refuses it.
    // Publish is `PUT /new`, which `/{name}` refuses so (a crate may be named
    // `new`, and GET of it is metadata like any other).
    // Each counted as `api` (the scope's own label is downloads').
    cfg.service(
        web::resource("")
            .app_data(Route::Api)
            .route(web::route().guard(get_or_head()).to(search))
            .default_service(web::to(write)),
    )
    .service(
        web::resource("/{name}")
            .app_data(Route::Api)
            .route(web::route().guard(get_or_head()).to(crate_info))
            .default_service(web::to(write)),
    )
    .service(
        web::resource("/{name}/owners")
            .app_data(Route::Api)
            .to(write),
    )
    .service(
        web::resource(["/{name}/{version}/yank", "/{name}/{version}/unyank"])
            .app_data(Route::Api)
            .to(write),
    );
}

/// `GET /api/v1/crates?q=...&per_page=...&page=...` (`cargo search`).
async fn search(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (body, outcome) = state.registry_api.search(req.query_string()).await?;
    Ok(answer(body, outcome))
}

/// `GET /api/v1/crates/{name}`: the name as the router matched it.
async fn crate_info(
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (body, outcome) = state.registry_api.crate_info(&name).await?;
    Ok(answer(body, outcome))
}

/// Publish, yank, unyank and owners.
async fn write(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Err(state.registry_api.write().into())
}

fn answer(body: Bytes, outcome: ApiOutcome) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .insert_header((X_CACHE, HeaderValue::from_static(outcome.as_str())))
        .body(body)
}
