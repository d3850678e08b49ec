//! The one error type every layer of the pipeline returns, and its JSON form.
//!
//! Every failure a client can cause or see becomes an [`ApiError`]: an HTTP status, a stable
//! machine-readable [`ErrorCode`] and a human message. The JSON body is always
//! `{"error":{"code":"...","message":"..."}}`.

use std::fmt;

/// Stable, machine-readable error codes (the `error.code` field of the JSON body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not valid JSON, or not a JSON object.
    InvalidJson,
    /// The request is well-formed JSON but a field is missing or has the wrong type.
    InvalidRequest,
    /// The `image` field is not valid base64 or not a valid `data:` URL.
    InvalidBase64,
    /// An option (`conf`, `iou`, `max_det`, `classes`, `model`) is out of range or malformed.
    InvalidOption,
    /// The body is empty.
    EmptyBody,
    /// No API key, or an unknown or malformed one.
    Unauthorized,
    /// The tenant's balance does not cover the per-call price.
    InsufficientBalance,
    /// The API key was revoked.
    KeyRevoked,
    /// No route matches the path.
    NotFound,
    /// The requested model does not exist.
    ModelNotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// The request's header section is larger, or has more fields, than the configured limits.
    HeadersTooLarge,
    /// The client sent the body too slowly (it stalled, or took longer than the limit).
    RequestTimeout,
    /// The decoded image would be larger than the configured limit.
    ImageTooLarge,
    /// The `Content-Type` is not one the function accepts.
    UnsupportedMediaType,
    /// The bytes are not a decodable PNG, JPEG or WebP image.
    UndecodableImage,
    /// An `Idempotency-Key` was reused with a different request.
    IdempotencyKeyReused,
    /// The model's files or metadata are unusable.
    ModelInvalid,
    /// The inference backend failed.
    InferenceFailed,
    /// The function itself failed (a trap or panic in the guest) without answering.
    FunctionFailed,
    /// The invocation passed its wall-clock deadline and was stopped.
    FunctionTimeout,
    /// The invocation burnt its whole fuel budget and was stopped.
    FuelExhausted,
    /// The function needed more linear memory than its limit and was stopped.
    MemoryExhausted,
    /// One inference ran past its deadline and was stopped.
    InferenceTimeout,
    /// Every instance slot is busy and the wait queue is full or too slow.
    Overloaded,
    /// The tenant sends requests faster than its rate limit.
    RateLimited,
    /// The tenant has too many requests in flight.
    ConcurrencyLimited,
    /// The state store (tenants, keys, ledger) cannot be reached: nothing was charged.
    LedgerUnavailable,
    /// Anything else that went wrong on the server side.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with this code.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidJson | Self::InvalidRequest | Self::InvalidBase64 | Self::InvalidOption | Self::EmptyBody => {
                400
            }
            Self::Unauthorized => 401,
            Self::InsufficientBalance => 402,
            Self::KeyRevoked => 403,
            Self::NotFound | Self::ModelNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge | Self::ImageTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::UndecodableImage | Self::IdempotencyKeyReused => 422,
            Self::RateLimited | Self::ConcurrencyLimited => 429,
            Self::HeadersTooLarge => 431,
            Self::Overloaded | Self::LedgerUnavailable => 503,
            Self::FunctionTimeout | Self::FuelExhausted | Self::InferenceTimeout => 504,
            Self::ModelInvalid
            | Self::InferenceFailed
            | Self::FunctionFailed
            | Self::MemoryExhausted
            | Self::Internal => 500,
        }
    }

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidOption => "invalid_option",
            Self::EmptyBody => "empty_body",
            Self::Unauthorized => "unauthorized",
            Self::InsufficientBalance => "insufficient_balance",
            Self::KeyRevoked => "key_revoked",
            Self::NotFound => "not_found",
            Self::ModelNotFound => "model_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::ImageTooLarge => "image_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UndecodableImage => "undecodable_image",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::ModelInvalid => "model_invalid",
            Self::InferenceFailed => "inference_failed",
            Self::FunctionFailed => "function_failed",
            Self::FunctionTimeout => "function_timeout",
            Self::FuelExhausted => "fuel_exhausted",
            Self::MemoryExhausted => "memory_exhausted",
            Self::InferenceTimeout => "inference_timeout",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
            Self::ConcurrencyLimited => "concurrency_limited",
            Self::LedgerUnavailable => "ledger_unavailable",
            Self::Internal => "internal",
        }
    }
}

/// An error answer: status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What kind of error this is; decides the status.
    pub code: ErrorCode,
    /// A sentence for humans, with the concrete cause.
    pub message: String,
}

impl ApiError {
    /// Make an error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body: `{"error":{"code":"...","message":"..."}}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "error": { "code": self.code.as_str(), "message": self.message }
        })
        .to_string()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code.as_str(), self.status(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let cases = [
            (ErrorCode::InvalidJson, 400),
            (ErrorCode::InvalidBase64, 400),
            (ErrorCode::InvalidOption, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::InsufficientBalance, 402),
            (ErrorCode::KeyRevoked, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::ModelNotFound, 404),
            (ErrorCode::MethodNotAllowed, 405),
            (ErrorCode::RequestTimeout, 408),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::HeadersTooLarge, 431),
            (ErrorCode::ImageTooLarge, 413),
            (ErrorCode::UnsupportedMediaType, 415),
            (ErrorCode::UndecodableImage, 422),
            (ErrorCode::InferenceFailed, 500),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::Overloaded, 503),
            (ErrorCode::FunctionTimeout, 504),
            (ErrorCode::InferenceTimeout, 504),
        ];
        for (code, status) in cases {
            assert_eq!(code.status(), status, "{code:?}");
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let e = ApiError::new(ErrorCode::InvalidOption, "conf must be in [0, 1], got 2");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_option");
        assert_eq!(v["error"]["message"], "conf must be in [0, 1], got 2");
        assert_eq!(v.as_object().unwrap().len(), 1);
    }
}
