//! One error type for every route, rendered in the shape each route family's clients parse
//! (DESIGN §7): Engram's own routes `{"error": {"code", "message"}}`, the FastAPI-born
//! services add `"detail"`, AIBrain's routes `{"success": false, "error", "code"}`.
//! Bare error responses from layers (405, 408, 413) are reshaped the same way.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Timeout,
    Conflict,
    Gone,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Gone => StatusCode::GONE,
            ErrorCode::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::GONE => ErrorCode::Gone,
            StatusCode::PRECONDITION_FAILED => ErrorCode::PreconditionFailed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::Unprocessable,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            s if s.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Unauthorized => "authentication required",
            ErrorCode::Forbidden => "not allowed",
            ErrorCode::NotFound => "not found",
            ErrorCode::MethodNotAllowed => "method not allowed on this path",
            ErrorCode::Timeout => "the request took too long",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Gone => "gone",
            ErrorCode::PreconditionFailed => "precondition failed",
            ErrorCode::PayloadTooLarge => "the request body is larger than the limit",
            ErrorCode::UnsupportedMediaType => "unsupported content type",
            ErrorCode::Unprocessable => "the request is not valid",
            ErrorCode::RateLimited => "too many requests",
            ErrorCode::Internal => "internal error",
            ErrorCode::Unavailable => "service unavailable",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Gone => "gone",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// An error a handler returns; `?` converts the usual causes.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (seconds), for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }

    /// 429 with `Retry-After`, rounded up to whole seconds (at least 1).
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self { retry_after: Some(seconds.max(1)), ..Self::new(ErrorCode::RateLimited, message) }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// A failure whose cause must not reach the client: logged here, answered as 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(ErrorCode::Internal, ErrorCode::Internal.default_message())
    }
}

impl From<storage::StoreError> for ApiError {
    fn from(e: storage::StoreError) -> Self {
        match e {
            storage::StoreError::PreconditionFailed => {
                Self::new(ErrorCode::PreconditionFailed, "precondition failed")
            }
            storage::StoreError::InvalidKey(why) => Self::new(ErrorCode::BadRequest, why),
            other @ storage::StoreError::Backend { .. } => Self::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => ErrorCode::Unprocessable,
            JsonRejection::MissingJsonContentType(_) => ErrorCode::UnsupportedMediaType,
            JsonRejection::BytesRejection(_) => ErrorCode::from_status(rejection.status()),
            _ => ErrorCode::BadRequest,
        };
        Self::new(code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(ErrorCode::Unprocessable, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(ErrorCode::from_status(rejection.status()), rejection.body_text())
    }
}

/// The error as rendered, kept on the response so a route family's layer can reshape it.
#[derive(Debug, Clone)]
struct RenderedError(ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.code.status(), axum::Json(ErrorFamily::Engram.body(&self, ""))).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(RenderedError(self));
        response
    }
}

/// Which clients a group of routes answers, and so the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFamily {
    /// Engram's own routes.
    Engram,
    /// Routes of the FastAPI-born originals (DiffMem, memory proxy, coordinator, Memory-Break).
    FastApi,
    /// AIBrain's routes.
    AiBrain,
    /// Memory-Break's routes: `{error, detail, status_code, path}`.
    MemoryBreak,
}

/// Path prefixes of AIBrain's routes and of the FastAPI-born originals' (the rest are Engram's).
const AIBRAIN_PREFIXES: &[&str] = &["/api/v1/auth", "/api/v1/memories", "/api/v1/sync"];
const MEMORY_BREAK_PREFIXES: &[&str] =
    &["/api/v1/tasks", "/api/v1/leaderboard", "/api/v1/logs", "/api/v1/artifacts"];
const FASTAPI_PREFIXES: &[&str] = &[
    "/memory",
    "/repos",
    "/blob",
    "/blobs",
    "/sync",
    "/push",
    "/pull",
    "/api/v1/federation",
    "/auth/github",
];

impl ErrorFamily {
    /// The family of the routes under `path`, for answers made before a route is reached
    /// (body limit, timeout, unknown path) and for the API document.
    pub fn for_path(path: &str) -> Self {
        let under =
            |prefixes: &[&str]| prefixes.iter().any(|p| path == *p || path.starts_with(&format!("{p}/")));
        if under(AIBRAIN_PREFIXES) {
            ErrorFamily::AiBrain
        } else if under(MEMORY_BREAK_PREFIXES) {
            ErrorFamily::MemoryBreak
        } else if under(FASTAPI_PREFIXES) {
            ErrorFamily::FastApi
        } else {
            ErrorFamily::Engram
        }
    }

    /// The error's body in this family's shape; `path` is the request's (Memory-Break says it).
    pub fn body(self, error: &ApiError, path: &str) -> Value {
        let code = error.code.as_str();
        match self {
            ErrorFamily::Engram => json!({"error": {"code": code, "message": error.message}}),
            ErrorFamily::FastApi => {
                json!({"detail": error.message, "error": {"code": code, "message": error.message}})
            }
            ErrorFamily::AiBrain => {
                json!({"success": false, "error": error.message, "code": code.to_ascii_uppercase()})
            }
            ErrorFamily::MemoryBreak => json!({
                "error": error.message,
                "detail": error.message,
                "status_code": error.code.status().as_u16(),
                "path": path,
            }),
        }
    }
}

/// Renders every error response of the routes below it in `family`'s shape: errors from
/// handlers (re-rendered) and bare ones from layers and the router (405, 408, 413).
pub async fn reshape_errors(State(family): State<ErrorFamily>, response: Response) -> Response {
    reshape(family, "", response)
}

fn reshape(family: ErrorFamily, path: &str, mut response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let error = match response.extensions_mut().remove::<RenderedError>() {
        Some(_) if family == ErrorFamily::Engram => {
            // Already in this shape; leave it (and so to outer layers) as it is.
            return response;
        }
        Some(RenderedError(error)) => error,
        None if is_json(&response) => return response,
        None => {
            let code = ErrorCode::from_status(status);
            ApiError::new(code, code.default_message())
        }
    };
    let mut reshaped = (status, axum::Json(family.body(&error, path))).into_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            reshaped.headers_mut().append(name.clone(), value.clone());
        }
    }
    reshaped
}

/// `reshape_errors` with the family of the request's path: the outermost error layer, for
/// answers no route's own layer saw (413 from the body limit, 408, 404 for unknown paths).
pub async fn reshape_errors_by_path(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    reshape(ErrorFamily::for_path(&path), &path, response)
}

fn is_json(response: &Response) -> bool {
    has_json_content_type(response.headers())
}

/// Whether `Content-Type` is `application/json` or `application/*+json` (parameters aside).
pub fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")))
}

/// `axum::Json` whose rejections are `ApiError`s, so bad bodies get the family's shape, and
/// which takes only a JSON object (serde would read a struct from an array too).
pub struct AppJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !has_json_content_type(request.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let body = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            ApiError::new(ErrorCode::from_status(rejection.status()), rejection.body_text())
        })?;
        require_object(&body)?;
        match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => Ok(AppJson(value)),
            Err(rejection @ JsonRejection::JsonDataError(_)) => {
                with_whole_numbers(&body).map(AppJson).ok_or_else(|| rejection.into())
            }
            Err(rejection) => Err(rejection.into()),
        }
    }
}

/// `body` read as `T` once numbers like `720.0` are integers: JSON has one number type, so a
/// whole number written with a fraction is still a valid integer. Tried only after the plain
/// parse failed, so the common path parses once.
pub fn with_whole_numbers<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    fn whole(value: &mut Value) -> bool {
        match value {
            Value::Number(n) if n.is_f64() => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                    *value = Value::from(f as i64);
                    true
                }
                _ => false,
            },
            Value::Array(items) => items.iter_mut().fold(false, |changed, item| whole(item) | changed),
            Value::Object(fields) => fields.values_mut().fold(false, |changed, field| whole(field) | changed),
            _ => false,
        }
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    if !whole(&mut value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// 422 unless `body` is a JSON object (or not JSON at all: that is for the parser to say).
pub fn require_object(body: &[u8]) -> Result<(), ApiError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => Ok(()),
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            Err(ApiError::new(ErrorCode::Unprocessable, "the body must be a JSON object"))
        }
        Some(_) => Ok(()),
    }
}

/// `axum::extract::Query` whose rejections are `ApiError`s (422 naming the parameter).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

/// The router's fallback: an unknown path.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no route for this path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_names_code_and_message() {
        let error = ApiError::new(ErrorCode::PreconditionFailed, "etag changed");
        assert_eq!(
            ErrorFamily::Engram.body(&error, ""),
            json!({"error": {"code": "precondition_failed", "message": "etag changed"}})
        );
        assert_eq!(ErrorFamily::FastApi.body(&error, "")["detail"], "etag changed");
        assert_eq!(
            ErrorFamily::AiBrain.body(&error, ""),
            json!({"success": false, "error": "etag changed", "code": "PRECONDITION_FAILED"})
        );
    }

    #[test]
    fn codes_round_trip_through_status() {
        for code in [
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Timeout,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Unprocessable,
            ErrorCode::Unavailable,
            ErrorCode::PreconditionFailed,
            ErrorCode::RateLimited,
            ErrorCode::Conflict,
        ] {
            assert_eq!(ErrorCode::from_status(code.status()), code);
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }
}
