//! The one place where errors of every layer become HTTP statuses (and, for
//! the registry web API, cargo's JSON error format).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::crates::CrateError;
use crate::git::GitError;
use crate::index::cache::IndexError;
use crate::index::path::PathError;
use crate::registry_api::RegistryApiError;
use crate::storage::StorageError;
use crate::upstream::{Cause, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Crate(#[from] CrateError),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error(transparent)]
    Git(#[from] GitError),
    /// Listing the stored crates failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Search, crate metadata and refused writes: answered as JSON.
    #[error(transparent)]
    Registry(#[from] RegistryApiError),
    /// The request's Host (or a trusted proxy's forwarded host or scheme) cannot
    /// be put into a URL.
    #[error("{0}")]
    BadHost(&'static str),
    /// A request past its connection's bound of streams in flight
    /// (`connection::MAX_STREAMS`, which the server's SETTINGS advertise).
    #[error("too many requests in flight on this connection")]
    TooManyStreams,
}

impl From<crate::names::NameError> for ApiError {
    fn from(err: crate::names::NameError) -> Self {
        ApiError::Path(err.into())
    }
}

/// A write on the read-only mirror. 403, not 405: the method is one the
/// registry API has, refused for the mirror's sake, whatever the method
/// (`GET .../owners` too); cargo prints either as `(status N ...)` followed
/// by the detail.
const READ_ONLY_STATUS: StatusCode = StatusCode::FORBIDDEN;

/// An upstream failure's status, by its cause; its body (`UpstreamError`'s
/// text) names the upstream and the cause's class.
fn upstream_status(err: &UpstreamError) -> StatusCode {
    match err.cause() {
        Cause::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Cause::CircuitOpen(_) => StatusCode::SERVICE_UNAVAILABLE,
        // Nothing to fetch from: what is not cached does not exist here, and
        // cargo says "no matching package" instead of retrying a 5xx.
        Cause::Offline => StatusCode::NOT_FOUND,
        Cause::Dns
        | Cause::ConnectionRefused
        | Cause::Connect
        | Cause::Tls
        | Cause::Protocol
        | Cause::Status(_)
        | Cause::Body
        | Cause::InvalidConfig(_)
        | Cause::TooLarge(_)
        | Cause::InvalidIndex(_)
        | Cause::RedirectRefused(_)
        | Cause::Setup(_) => StatusCode::BAD_GATEWAY,
    }
}

fn index_status(err: &IndexError) -> StatusCode {
    match err {
        IndexError::Upstream(err) => upstream_status(err),
        IndexError::Storage(_) | IndexError::Background(_) | IndexError::Aborted(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            // A name or version that cannot exist is a crate that does not
            // exist: cargo then says "no matching package" instead of failing.
            ApiError::Path(
                PathError::PrefixMismatch | PathError::InvalidName | PathError::InvalidVersion,
            )
            | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Path(PathError::Malformed) => StatusCode::BAD_REQUEST,
            ApiError::BadHost(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Git(_) | ApiError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Registry(err) => match err {
                RegistryApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
                RegistryApiError::ReadOnly => READ_ONLY_STATUS,
                RegistryApiError::NoApi | RegistryApiError::CrateNotFound(_) => {
                    StatusCode::NOT_FOUND
                }
                RegistryApiError::Upstream(err) => upstream_status(err),
                RegistryApiError::NotJson => StatusCode::BAD_GATEWAY,
            },
            ApiError::Index(err) => index_status(err),
            ApiError::Crate(err) => match err {
                CrateError::NotFound => StatusCode::NOT_FOUND,
                CrateError::Index(err) => index_status(err),
                CrateError::Upstream(err) => upstream_status(err),
                CrateError::BadIndexLine
                | CrateError::ChecksumMismatch
                | CrateError::LengthMismatch => StatusCode::BAD_GATEWAY,
                CrateError::Storage(_) | CrateError::Aborted => StatusCode::INTERNAL_SERVER_ERROR,
                CrateError::Denied(_) => StatusCode::FORBIDDEN,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        if let ApiError::Registry(_) = self {
            // What cargo reads from an API error and prints after the status.
            let body = serde_json::json!({ "errors": [{ "detail": self.to_string() }] });
            return HttpResponse::build(status).json(body);
        }
        let mut response = HttpResponse::build(status);
        if let ApiError::TooManyStreams = self {
            // The client's own streams end within moments; cargo retries a 429.
            response.insert_header((actix_web::http::header::RETRY_AFTER, "1"));
        }
        response
            .content_type("text/plain; charset=utf-8")
            .body(format!("{self}\n"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::store::StoreError;
    use crate::storage::StorageError;

    #[test]
    fn upstream_failures_map_to_gateway_statuses_by_cause() {
        let status =
            |cause| ApiError::Index(IndexError::Upstream(UpstreamError::from(cause))).status_code();
        assert_eq!(status(Cause::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status(Cause::CircuitOpen(Some(Box::new(Cause::Dns)))),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(Cause::Offline), StatusCode::NOT_FOUND);
        for cause in [
            Cause::Dns,
            Cause::ConnectionRefused,
            Cause::Tls,
            Cause::Status(500),
            Cause::InvalidConfig("expected value".into()),
        ] {
            assert_eq!(status(cause), StatusCode::BAD_GATEWAY);
        }
    }

    #[tokio::test]
    async fn storage_and_background_failures_are_500() {
        let panicked = tokio::spawn(async { panic!("decoder bug") })
            .await
            .expect_err("the task panicked");
        let failures = [
            ApiError::Index(IndexError::from(StoreError::Corrupt("abc".into()))),
            ApiError::Index(IndexError::Background(Arc::new(panicked))),
            ApiError::Crate(CrateError::from(StorageError::Settings("none".into()))),
            ApiError::Crate(CrateError::from(std::io::Error::other("disk"))),
        ];
        for failure in failures {
            assert_eq!(
                failure.status_code(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{failure}"
            );
        }
    }
}
