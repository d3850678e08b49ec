//! The answers the host writes itself: the response type of every route, JSON errors, headers,
//! and the client's response for a function's outcome. Every module that answers a request
//! builds its reply here; this module imports nothing from them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use yolo_core::{ApiError, ErrorCode};

use crate::invoke::{Failure, Outcome};

/// The response type of every route.
pub type Reply = Response<Full<Bytes>>;

/// A JSON error answer.
pub fn json_error(e: &ApiError) -> Reply {
    json_reply(e.status(), e.to_json())
}

/// A JSON answer with a status.
pub fn json_reply(status: u16, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Set a header from text (ignored when the text is not a valid header value).
pub fn set_header(r: &mut Reply, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        r.headers_mut().insert(name, v);
    }
}

/// The answer when no component serves a path.
pub fn no_route(path: &str) -> Reply {
    json_error(&ApiError::new(ErrorCode::NotFound, format!("no component serves {path:?}")))
}

/// The client's response for a function answer, or a JSON 500 / 504 when the function failed.
pub fn function_reply(outcome: &Outcome) -> Reply {
    match outcome {
        Outcome::Answered(guest) => {
            let mut r = Response::new(Full::new(guest.body.clone()));
            *r.status_mut() = guest.parts.status;
            for (name, value) in &guest.parts.headers {
                if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                    r.headers_mut().append(name, value.clone());
                }
            }
            r
        }
        Outcome::Failed(kind, message) => json_error(&match kind {
            Failure::Trap => ApiError::new(ErrorCode::FunctionFailed, format!("the function failed: {message}")),
            Failure::Timeout => ApiError::new(
                ErrorCode::FunctionTimeout,
                format!("the function ran past its deadline and was stopped: {message}"),
            ),
            Failure::OutOfFuel => ApiError::new(
                ErrorCode::FuelExhausted,
                format!("the function burnt its whole fuel budget and was stopped: {message}"),
            ),
            Failure::OutOfMemory => ApiError::new(ErrorCode::MemoryExhausted, message.clone()),
        }),
    }
}
