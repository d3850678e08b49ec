//! Turning an HTTP request body into image bytes plus [`DetectOptions`].
//!
//! Two forms are accepted on `POST /detect`:
//! * `Content-Type: application/json` with `{"image": "<base64 or data: URL>", ...options}`;
//! * `Content-Type: image/jpeg | image/png | image/webp` (or `application/octet-stream`) with
//!   the raw bytes, options in the query string (`?conf=0.3&classes=0,2`).
//!
//! Without a `Content-Type`, the body is sniffed: a JSON object or a known image signature.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

use crate::decode::sniff_format;
use crate::error::{ApiError, ErrorCode};
use crate::options::DetectOptions;

/// Media types accepted as a raw image body.
pub const IMAGE_MEDIA_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// A parsed detection request: the encoded image and the options.
#[derive(Debug)]
pub struct DetectRequest<'a> {
    /// The encoded image (PNG, JPEG or WebP bytes), borrowed from a raw body.
    pub image: Cow<'a, [u8]>,
    /// The validated options.
    pub options: DetectOptions,
}

/// How the body is to be read, from the `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyForm {
    /// A JSON object.
    Json,
    /// Raw image bytes.
    Image,
}

/// Decide the body form from the `Content-Type` (parameters such as `charset` ignored),
/// sniffing the body when there is none.
pub fn body_form(content_type: Option<&str>, body: &[u8]) -> Result<BodyForm, ApiError> {
    let media =
        content_type.map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()).filter(|m| !m.is_empty());
    match media.as_deref() {
        Some("application/json") => Ok(BodyForm::Json),
        Some(m) if IMAGE_MEDIA_TYPES.contains(&m) => Ok(BodyForm::Image),
        Some("image/jpg") => Ok(BodyForm::Image),
        Some("application/octet-stream") => Ok(BodyForm::Image),
        Some(other) => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {other:?} is not supported: send application/json with a base64 \"image\", or the raw image as {}",
                IMAGE_MEDIA_TYPES.join(", ")
            ),
        )),
        None => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'{') {
                Ok(BodyForm::Json)
            } else if sniff_format(body).is_some() {
                Ok(BodyForm::Image)
            } else {
                Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "no Content-Type and the body is neither a JSON object nor a PNG, JPEG or WebP image",
                ))
            }
        }
    }
}

/// Parse a `POST /detect` body.
pub fn parse_detect_request<'a>(
    content_type: Option<&str>,
    query: &str,
    body: &'a [u8],
) -> Result<DetectRequest<'a>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmptyBody,
            "the request body is empty: send an image (raw, or base64 in JSON {\"image\": ...})",
        ));
    }
    match body_form(content_type, body)? {
        BodyForm::Image => Ok(DetectRequest { image: Cow::Borrowed(body), options: DetectOptions::from_query(query)? }),
        BodyForm::Json => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON: {e}")))?;
            let obj = value
                .as_object()
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidJson, "the JSON body must be an object"))?;
            let image = match obj.get("image") {
                Some(Value::String(s)) => decode_image_field(s)?,
                Some(other) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("\"image\" must be a base64 string or a data: URL, got {}", type_name(other)),
                    ));
                }
                None => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        "the JSON body has no \"image\" field (base64 string or data: URL)",
                    ));
                }
            };
            // Query parameters are accepted too; a field in the JSON body wins over them.
            let options = DetectOptions::from_query(query)?.with_json(obj, &["image"])?;
            Ok(DetectRequest { image: Cow::Owned(image), options })
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// Decode the `image` field: plain base64 (standard or URL-safe alphabet, padding optional,
/// line breaks allowed) or a `data:image/...;base64,` URL.
pub fn decode_image_field(field: &str) -> Result<Vec<u8>, ApiError> {
    let b64 = match field.strip_prefix("data:") {
        Some(rest) => {
            let (meta, payload) = rest.split_once(',').ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidBase64, "the data: URL has no ',' before its payload")
            })?;
            let mut parts = meta.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if !parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
                return Err(ApiError::new(
                    ErrorCode::InvalidBase64,
                    "the data: URL must be base64-encoded (data:image/...;base64,...)",
                ));
            }
            if !media.is_empty() && !media.starts_with("image/") && media != "application/octet-stream" {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("the data: URL holds {media:?}, not an image"),
                ));
            }
            payload
        }
        None => field,
    };
    let compact: Cow<'_, str> = if b64.bytes().any(|b| b.is_ascii_whitespace()) {
        Cow::Owned(b64.chars().filter(|c| !c.is_ascii_whitespace()).collect())
    } else {
        Cow::Borrowed(b64)
    };
    if compact.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidBase64, "\"image\" is empty"));
    }
    let engine = if compact.contains(['-', '_']) { &URL_SAFE } else { &STANDARD };
    engine
        .decode(compact.as_bytes())
        .map_err(|e| ApiError::new(ErrorCode::InvalidBase64, format!("\"image\" is not valid base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose;

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n rest";

    #[test]
    fn content_types() {
        assert_eq!(body_form(Some("application/json; charset=utf-8"), b"{}").unwrap(), BodyForm::Json);
        assert_eq!(body_form(Some("IMAGE/PNG"), b"").unwrap(), BodyForm::Image);
        assert_eq!(body_form(Some("image/jpeg"), b"").unwrap(), BodyForm::Image);
        assert_eq!(body_form(Some("image/webp"), b"").unwrap(), BodyForm::Image);
        assert_eq!(body_form(None, b"  {\"image\":1}").unwrap(), BodyForm::Json);
        assert_eq!(body_form(None, PNG_MAGIC).unwrap(), BodyForm::Image);
        for bad in ["text/plain", "image/gif", "multipart/form-data; boundary=x"] {
            let e = body_form(Some(bad), PNG_MAGIC).unwrap_err();
            assert_eq!(e.status(), 415, "{bad}");
        }
        assert_eq!(body_form(None, b"hello").unwrap_err().status(), 415);
    }

    #[test]
    fn raw_body_borrows_and_reads_query() {
        let r = parse_detect_request(Some("image/png"), "conf=0.4", PNG_MAGIC).unwrap();
        assert!(matches!(r.image, Cow::Borrowed(_)));
        assert_eq!(r.options.conf, 0.4);
    }

    #[test]
    fn json_body_with_base64_and_data_url() {
        let b64 = general_purpose::STANDARD.encode(PNG_MAGIC);
        let body = format!(r#"{{"image":"{b64}","max_det":3}}"#);
        let r = parse_detect_request(Some("application/json"), "", body.as_bytes()).unwrap();
        assert_eq!(&*r.image, PNG_MAGIC);
        assert_eq!(r.options.max_det, 3);

        let body = format!(r#"{{"image":"data:image/png;base64,{b64}"}}"#);
        let r = parse_detect_request(Some("application/json"), "", body.as_bytes()).unwrap();
        assert_eq!(&*r.image, PNG_MAGIC);
    }

    #[test]
    fn base64_variants() {
        let raw = b"\xfb\xff\xfe some bytes";
        let std = general_purpose::STANDARD.encode(raw);
        let url = general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(decode_image_field(&std).unwrap(), raw);
        assert_eq!(decode_image_field(&url).unwrap(), raw);
        assert_eq!(decode_image_field(std.trim_end_matches('=')).unwrap(), raw);
        let wrapped = format!("{}\n{}", &std[..8], &std[8..]);
        assert_eq!(decode_image_field(&wrapped).unwrap(), raw);
    }

    #[test]
    fn malformed_bodies() {
        let cases: &[(&str, &[u8], u16, &str)] = &[
            ("application/json", b"{not json", 400, "invalid_json"),
            ("application/json", b"[1,2]", 400, "invalid_json"),
            ("application/json", b"{}", 400, "invalid_request"),
            ("application/json", br#"{"image": 5}"#, 400, "invalid_request"),
            ("application/json", br#"{"image": "!!!notbase64"}"#, 400, "invalid_base64"),
            ("application/json", br#"{"image": ""}"#, 400, "invalid_base64"),
            ("application/json", br#"{"image": "data:image/png,abcd"}"#, 400, "invalid_base64"),
            ("application/json", br#"{"image": "data:image/png;base64"}"#, 400, "invalid_base64"),
            ("application/json", br#"{"image": "data:text/plain;base64,aGk="}"#, 415, "unsupported_media_type"),
            ("application/json", br#"{"image": "aGk=", "conf": 7}"#, 400, "invalid_option"),
            ("image/png", b"", 400, "empty_body"),
            ("text/csv", b"a,b", 415, "unsupported_media_type"),
        ];
        for (ct, body, status, code) in cases {
            let e = parse_detect_request(Some(ct), "", body).unwrap_err();
            assert_eq!((e.status(), e.code.as_str()), (*status, *code), "{ct} {:?}", String::from_utf8_lossy(body));
        }
        let e = parse_detect_request(Some("image/png"), "conf=2", PNG_MAGIC).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidOption);
    }

    #[test]
    fn json_options_win_over_query() {
        let b64 = general_purpose::STANDARD.encode(PNG_MAGIC);
        let body = format!(r#"{{"image":"{b64}","conf":0.6}}"#);
        let r = parse_detect_request(Some("application/json"), "conf=0.1&max_det=4", body.as_bytes()).unwrap();
        assert_eq!(r.options.conf, 0.6);
        assert_eq!(r.options.max_det, 4);
    }
}
