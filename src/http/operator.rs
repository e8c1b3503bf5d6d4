//! The dashboard's on-demand JSON: the settings in use (`/api/settings`),
//! the cached crates (`/api/crates?q=&page=`, when someone opens or searches
//! the list) and the cargo configuration for this mirror
//! (`/api/cargo-config`, open like the page itself: it says no more than a
//! refusal's login hint does).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{origin, ApiError};
use crate::storage::catalog::Search;
use crate::AppState;

pub async fn settings(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(state.operator.settings())
}

/// `?q=` (a part of a crate name) and `?page=` (from 1), both optional.
#[derive(Debug, serde::Deserialize)]
pub struct CratesQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
}

pub async fn cached_crates(
    state: web::Data<AppState>,
    query: web::Query<CratesQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = state
        .stores
        .cached_crates(Search::new(&query.q), query.page)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(page))
}

pub async fn cargo_config(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let origin = origin::public_base(&req, &state)?;
    let index_url = format!("{}/index/", origin.base);
    let config = crate::client_config::for_mirror(&index_url, state.facing.access.is_private());
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, origin.vary))
        .json(config))
}
