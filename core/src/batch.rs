//! `POST /detect/batch`: several images, one set of options, one answer per image in input
//! order. A bad image fails its own slot; a malformed request (or one over the batch limit)
//! fails as a whole.

use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::options::DetectOptions;
use crate::request::{BodyForm, body_form, decode_image_field};

/// How many images a batch may hold unless the deployment says otherwise.
pub const DEFAULT_MAX_BATCH: usize = 16;

/// A parsed batch: each image's bytes (or why that slot cannot be read), and the options.
#[derive(Debug)]
pub struct BatchRequest {
    /// One entry per input image, in order.
    pub images: Vec<Result<Vec<u8>, ApiError>>,
    /// The validated options, shared by every image.
    pub options: DetectOptions,
}

/// Parse a batch body: JSON `{"images": ["<base64 or data: URL>", ...], "conf": ..., ...}`
/// (options in the query string too; the body's win). More than `max_batch` images: 413.
pub fn parse_batch_request(
    content_type: Option<&str>,
    query: &str,
    body: &[u8],
    max_batch: usize,
) -> Result<BatchRequest, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmptyBody,
            "the request body is empty: send JSON {\"images\": [\"<base64>\", ...]}",
        ));
    }
    if body_form(content_type, body)? != BodyForm::Json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "a batch is JSON: {\"images\": [\"<base64>\", ...]} with Content-Type application/json",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")))?;
    let obj =
        value.as_object().ok_or_else(|| ApiError::new(ErrorCode::InvalidJson, "the JSON body must be an object"))?;
    let Some(Value::Array(images)) = obj.get("images") else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the JSON body needs \"images\": an array of base64 strings or data: URLs",
        ));
    };
    if images.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "\"images\" is empty: send at least one image"));
    }
    if images.len() > max_batch {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the batch holds {} images; the limit is {max_batch}", images.len()),
        ));
    }
    let options = DetectOptions::from_query(query)?.with_json(obj, &["images"])?;
    if options.annotate.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidOption,
            "annotate is not available for a batch: send each image to /detect",
        ));
    }
    let images = images
        .iter()
        .map(|v| match v {
            Value::String(s) => decode_image_field(s),
            _ => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "each of \"images\" must be a base64 string or a data: URL",
            )),
        })
        .collect();
    Ok(BatchRequest { images, options })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    #[test]
    fn images_in_order_with_shared_options_and_slot_errors() {
        let (a, b) = (STANDARD.encode(b"first"), STANDARD.encode(b"second"));
        let body = format!(r#"{{"images":["{a}", 7, "!!", "data:image/png;base64,{b}"],"conf":0.5}}"#);
        let r = parse_batch_request(Some("application/json"), "max_det=3", body.as_bytes(), 16).unwrap();
        assert_eq!(r.options.conf, 0.5);
        assert_eq!(r.options.max_det, 3);
        assert_eq!(r.images.len(), 4);
        assert_eq!(r.images[0].as_deref().unwrap(), b"first");
        assert_eq!(r.images[1].as_ref().unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(r.images[2].as_ref().unwrap_err().code, ErrorCode::InvalidBase64);
        assert_eq!(r.images[3].as_deref().unwrap(), b"second");
    }

    #[test]
    fn whole_request_errors() {
        let one = STANDARD.encode(b"x");
        let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
            (Some("application/json"), String::new(), 400, "empty_body"),
            (Some("image/png"), "\u{89}PNG".into(), 415, "unsupported_media_type"),
            (Some("application/json"), "[1]".into(), 400, "invalid_json"),
            (Some("application/json"), r#"{"image":"eA=="}"#.into(), 400, "invalid_request"),
            (Some("application/json"), r#"{"images":[]}"#.into(), 400, "invalid_request"),
            (Some("application/json"), format!(r#"{{"images":["{one}"],"conf":9}}"#), 400, "invalid_option"),
            (Some("application/json"), format!(r#"{{"images":["{one}"],"image":"x"}}"#), 400, "invalid_option"),
            (Some("application/json"), format!(r#"{{"images":["{one}"],"annotate":"png"}}"#), 400, "invalid_option"),
            (Some("application/json"), format!(r#"{{"images":["{one}","{one}","{one}"]}}"#), 413, "payload_too_large"),
        ];
        for (ct, body, status, code) in cases {
            let e = parse_batch_request(ct, "", body.as_bytes(), 2).unwrap_err();
            assert_eq!((e.status(), e.code.as_str()), (status, code), "{body}");
        }
    }
}
