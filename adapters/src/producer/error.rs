//! API errors as JSON: every rejection says what was wrong, and where.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One problem with a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Which event of the request (0-based), when the request carries several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<usize>,
    /// The field (a JSON pointer into the event, or a header name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
}

impl Problem {
    pub fn new(reason: impl Into<String>) -> Self {
        Problem {
            event: None,
            field: None,
            reason: reason.into(),
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn event(mut self, index: usize) -> Self {
        self.event = Some(index);
        self
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `schema_violation`.
    pub code: &'static str,
    pub message: String,
    pub problems: Vec<Problem>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[Problem]>::is_empty")]
    problems: &'a [Problem],
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            problems: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn with(mut self, problems: Vec<Problem>) -> Self {
        self.problems = problems;
        self
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    pub fn invalid(problems: Vec<Problem>) -> Self {
        let n = problems.len();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_events",
            format!("{n} problem(s); nothing was accepted"),
        )
        .with(problems)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn overloaded(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the producer is at capacity; nothing was accepted, retry after the given delay",
        );
        e.retry_after_secs = Some(retry_after_secs);
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                status: self.status.as_u16(),
                code: self.code,
                message: &self.message,
                problems: &self.problems,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
