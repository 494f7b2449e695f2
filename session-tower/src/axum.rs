//! The axum extractor (feature `axum`).

use std::fmt;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::Session;

/// A handler takes the request's [`Session`] as an argument; the route must
/// be behind a [`SessionLayer`](crate::SessionLayer).
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

/// The rejection when a handler asks for a [`Session`] on a route that is
/// not behind a [`SessionLayer`](crate::SessionLayer): a server
/// misconfiguration, answered with `500 Internal Server Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingSessionLayer;

impl fmt::Display for MissingSessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("this route takes a Session but is not behind a SessionLayer")
    }
}

impl std::error::Error for MissingSessionLayer {}

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Session unavailable: the server is misconfigured.",
        )
            .into_response()
    }
}

/// A handler can answer a store error as the layer itself would: the
/// status of the failure, `Cache-Control: no-store`, and its
/// [`message`](crate::SessionFailure::message) as the body. With
/// `From<Error>`, `?` converts:
///
/// ```
/// use session_tower::{Session, SessionFailure};
///
/// async fn profile(session: Session) -> Result<String, SessionFailure> {
///     let name = session.get("user").await?; // 503 if the store is down
///     Ok(format!("hello, {}", name.as_deref().unwrap_or("stranger")))
/// }
/// ```
impl IntoResponse for crate::SessionFailure {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            [(http::header::CACHE_CONTROL, "no-store")],
            self.message(),
        )
            .into_response();
        response.extensions_mut().insert(self);
        response
    }
}
