//! The API's error: a status and a JSON body `{"error": ..., "code": ...}`, and the one
//! place where the decoders' and the store's errors become HTTP answers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use foresight_decode::{DecodeError, Refusal};
use serde_json::json;

/// An API error: a status and a JSON body `{"error": ..., "code": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The same error, telling the client when to retry (`Retry-After`).
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code: which limit or problem.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"error": self.message, "code": self.code})),
        )
            .into_response();
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        let status = match e.refusal() {
            Refusal::Invalid => StatusCode::BAD_REQUEST,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        ApiError::new(status, e.code(), e.message())
    }
}

/// An RFC 3339 time of a request field, or a 400 naming the field (with `code`).
pub(crate) fn rfc3339_field(code: &'static str, field: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                code,
                format!("{field}: {s:?} is not an RFC 3339 time: {e}"),
            )
        })
}

/// A store error as the API answers it: 404 for what does not exist (or is another
/// tenant's), 503 otherwise.
pub(crate) fn store_error(e: crate::store::Error) -> ApiError {
    match e {
        crate::store::Error::NotFound(what) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        ),
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", other.to_string())
            .retry_after(5),
    }
}

/// Runs blocking store work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(store_error)
}

/// The server-side failure of a step that cannot fail on good input (a task that
/// panicked, an encoder).
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// A 400 for a request body or parameter, with `code`.
pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}
