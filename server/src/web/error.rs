//! HTTP errors: the one place the domain's errors become statuses, and the
//! one place errors are logged. An error response carries what the log
//! should say in an extension ([`ErrorLog`]) that never reaches the client;
//! the [`log_errors`] middleware writes it once (axum's error-handling
//! example does the same), so no conversion logs.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use warren_domain::manage::ManageError;

/// What the log says about an error response: internal errors at error
/// level with their detail, client errors at debug level.
#[derive(Debug, Clone)]
pub struct ErrorLog {
    pub internal: bool,
    pub detail: Arc<str>,
}

impl ErrorLog {
    fn attach(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// The middleware that logs error responses, once.
pub async fn log_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    if let Some(log) = response.extensions().get::<ErrorLog>() {
        let status = response.status();
        if log.internal {
            tracing::error!(%method, path, %status, "internal error: {}", log.detail);
        } else {
            tracing::debug!(%method, path, %status, "{}", log.detail);
        }
    }
    response
}

/// Middleware: under `/api/`, the router's own 404 (no such route) and 405
/// (a route without this method, its `Allow` header kept) are JSON errors
/// like every other answer of the API, not plain text and an empty body.
pub async fn api_json_errors(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such API route; see /api/openapi.json".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = response
                .headers()
                .get(axum::http::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("{method} is not allowed here; allowed: {allow}")
        }
        _ => return response,
    };
    let (mut parts, _) = response.into_parts();
    let body = ApiError::new(status, message).into_response();
    let (body_parts, body) = body.into_parts();
    for (name, value) in &body_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// The HTTP status for a management failure: the only mapping.
pub fn status_of(e: &ManageError) -> StatusCode {
    match e {
        ManageError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ManageError::NoSuchUser(_) | ManageError::NoSuchTerminal | ManageError::NotFound(_) => {
            StatusCode::NOT_FOUND
        }
        ManageError::Conflict(_) | ManageError::OutOfMemory(_) => StatusCode::CONFLICT,
        ManageError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ManageError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        // Only exec turns `NotStarted` into a result; elsewhere (export,
        // import) a tool that cannot start is the server's failure.
        ManageError::NotStarted { .. }
        | ManageError::State(_)
        | ManageError::Prepare(_)
        | ManageError::Session(_)
        | ManageError::Backend(_)
        | ManageError::Start { .. }
        | ManageError::Io { .. }
        | ManageError::Archive { .. }
        | ManageError::Decode { .. }
        | ManageError::Join(_)
        | ManageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON error of the management API: `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// For the log only.
    log: Option<ErrorLog>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            log: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let response = (
            self.status,
            [(CACHE_CONTROL, "no-store")],
            Json(super::api_wire::ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        match self.log {
            Some(log) => log.attach(response),
            None => response,
        }
    }
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> Self {
        let status = status_of(&e);
        // 503 (full, shutting down) tells the client why; a 500 never does.
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return ApiError {
                status,
                message: "internal error; the server's log has the details".into(),
                log: Some(ErrorLog {
                    internal: true,
                    detail: e.to_string().into(),
                }),
            };
        }
        ApiError::new(status, e.to_string())
    }
}

/// A failure of the page, login and WebSocket routes, as plain text.
/// Internal errors tell the client no detail.
#[derive(Debug)]
pub enum HttpError {
    BadRequest(String),
    Unauthenticated(String),
    Forbidden(&'static str),
    NotFound,
    Internal(String),
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, body, log) = match self {
            HttpError::BadRequest(m) => (StatusCode::BAD_REQUEST, m, None),
            HttpError::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, m, None),
            HttpError::Forbidden(m) => (StatusCode::FORBIDDEN, m.to_string(), None),
            HttpError::NotFound => (StatusCode::NOT_FOUND, "not found".to_string(), None),
            HttpError::Internal(detail) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_string(),
                Some(detail),
            ),
        };
        let log = ErrorLog {
            internal: log.is_some(),
            detail: log.unwrap_or_else(|| body.clone()).into(),
        };
        let response = (
            status,
            [
                (CONTENT_TYPE, "text/plain; charset=utf-8"),
                (CACHE_CONTROL, "no-store"),
            ],
            format!("{body}\n"),
        )
            .into_response();
        log.attach(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(r: &Response) -> Option<ErrorLog> {
        r.extensions().get::<ErrorLog>().cloned()
    }

    #[test]
    fn each_management_error_gets_its_status() {
        let cases = [
            (ManageError::BadRequest("x".into()), 400),
            (ManageError::NoSuchUser("bob".into()), 404),
            (ManageError::NoSuchTerminal, 404),
            (ManageError::Conflict("x".into()), 409),
            (ManageError::TooLarge("x".into()), 413),
            (ManageError::Unavailable("x".into()), 503),
            (ManageError::Internal("x".into()), 500),
            (
                ManageError::io("spooling")(std::io::Error::other("disk")),
                500,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e:?}");
        }
    }

    #[test]
    fn internal_detail_goes_to_the_log_not_the_client() {
        let e = ManageError::io("spooling the upload")(std::io::Error::other("secret path"));
        let r = ApiError::from(e).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let log = log_of(&r).expect("an internal error carries its log");
        assert!(log.internal);
        assert!(log.detail.contains("secret path"), "{}", log.detail);

        let r = ApiError::from(ManageError::Unavailable("the server is full".into()));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.message, "the server is full");
        let r = ApiError::from(ManageError::NoSuchUser("bob".into())).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(
            log_of(&r).is_none(),
            "client errors of the API are not logged"
        );
    }

    #[test]
    fn page_errors_carry_their_log() {
        let r = HttpError::Internal("db gone".into()).into_response();
        let log = log_of(&r).unwrap();
        assert!(log.internal && &*log.detail == "db gone");
        let r = HttpError::NotFound.into_response();
        assert!(!log_of(&r).unwrap().internal);
    }
}
