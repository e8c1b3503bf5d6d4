//! The private-mode gate: registry routes need a client token, `/metrics` and
//! `/api/stats` optionally a metrics token; probes and the dashboard page stay
//! open. A missing token gets the 401 challenge cargo (or git) answers with
//! credentials; a wrong one gets 403 and nothing else.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use crate::auth::AuthCheck;
use crate::AppState;

enum Guard {
    Open,
    Registry,
    Git,
    Metrics,
}

fn guard_of(path: &str) -> Guard {
    if path.starts_with("/index/") || path.starts_with("/api/v1/crates/") {
        Guard::Registry
    } else if path.starts_with("/git/") {
        Guard::Git
    } else if path == "/metrics" || path == "/api/stats" {
        Guard::Metrics
    } else {
        Guard::Open
    }
}

pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let guard = guard_of(req.path());
    let tokens = match guard {
        Guard::Open => None,
        Guard::Registry | Guard::Git => Some(&state.auth_tokens),
        Guard::Metrics => Some(&state.metrics_tokens),
    };
    let check = match tokens {
        Some(tokens) if !tokens.is_empty() => tokens.check(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        ),
        _ => AuthCheck::Granted,
    };
    let refusal = match check {
        AuthCheck::Granted => return Ok(next.call(req).await?.map_into_left_body()),
        AuthCheck::Missing => {
            let challenge = match guard {
                Guard::Git => "Basic realm=\"crate-mirror\"".to_string(),
                _ => format!(
                    "Cargo login_url=\"{}/\"",
                    super::public_base(req.request(), &state)
                ),
            };
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, challenge))
                .content_type("text/plain; charset=utf-8")
                .body("authentication required\n")
        }
        AuthCheck::Denied => HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .body("invalid token\n"),
    };
    Ok(req.into_response(refusal).map_into_right_body())
}
