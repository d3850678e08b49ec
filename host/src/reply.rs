//! The answers the host writes itself: the response type of every route, JSON errors, headers,
//! and the client's response for a function's outcome. Every module that answers a request
//! builds its reply here; this module imports nothing from them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use yolo_core::{ApiError, ErrorCode};

use crate::answer::Answer;
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

/// The answer the client gets for a function's outcome: the function's own, or a JSON 500 /
/// 504 when it failed.
pub fn answer_of(outcome: Outcome) -> Answer {
    let e = match outcome {
        Outcome::Answered(answer) => return answer,
        Outcome::Failed(Failure::Trap, message) => {
            ApiError::new(ErrorCode::FunctionFailed, format!("the function failed: {message}"))
        }
        Outcome::Failed(Failure::Timeout, message) => ApiError::new(
            ErrorCode::FunctionTimeout,
            format!("the function ran past its deadline and was stopped: {message}"),
        ),
        Outcome::Failed(Failure::OutOfFuel, message) => ApiError::new(
            ErrorCode::FuelExhausted,
            format!("the function burnt its whole fuel budget and was stopped: {message}"),
        ),
        Outcome::Failed(Failure::OutOfMemory, message) => ApiError::new(ErrorCode::MemoryExhausted, message),
    };
    Answer::json(e.status(), e.to_json())
}

/// The client's response for an answer (a stored one too): its status, headers and body.
pub fn reply_of(answer: &Answer) -> Reply {
    let mut r = Response::new(Full::new(answer.body.clone()));
    *r.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            r.headers_mut().append(n, v);
        }
    }
    r
}
