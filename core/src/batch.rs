//! `POST /detect/batch`: several images, one set of options, one answer per image in input
//! order. A bad image fails its own slot; a malformed request (or one over the batch limit)
//! fails as a whole. Two forms: JSON `{"images": [...], ...options}`, or `multipart/form-data`
//! whose file parts are the images (in order) and whose text parts are options.

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

/// Parse a batch body: JSON `{"images": ["<base64 or data: URL>", ...], "conf": ..., ...}`, or
/// `multipart/form-data` (options in the query string too; the body's win). More than
/// `max_batch` images: 413.
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
    if let Some(boundary) = content_type.and_then(multipart_boundary) {
        return parse_multipart(&boundary, query, body, max_batch);
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
    within_limit(images.len(), max_batch)?;
    let options = DetectOptions::from_query(query)?.with_json(obj, &["images"])?;
    without_annotate(&options)?;
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

/// More than `max_batch` images: 413.
fn within_limit(images: usize, max_batch: usize) -> Result<(), ApiError> {
    if images > max_batch {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the batch holds {images} images; the limit is {max_batch}"),
        ));
    }
    Ok(())
}

/// A batch answers JSON only: `annotate` is refused.
fn without_annotate(options: &DetectOptions) -> Result<(), ApiError> {
    if options.annotate.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidOption,
            "annotate is not available for a batch: send each image to /detect",
        ));
    }
    Ok(())
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, format!("malformed multipart/form-data: {}", message.into()))
}

/// One part: its `Content-Disposition` name, whether it is a file, and its bytes.
struct Part<'a> {
    name: String,
    file: bool,
    data: &'a [u8],
}

/// Split a `multipart/form-data` body (RFC 7578) into its parts.
fn parts<'a>(boundary: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, ApiError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(malformed("the boundary must be 1 to 70 characters"));
    }
    // The first boundary line may start the body; every later one follows its part's CRLF,
    // so data holding `--boundary` without a CRLF before it stays data.
    let first = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let mut at =
        memchr::memmem::find(body, first.as_bytes()).ok_or_else(|| malformed("no boundary line"))? + first.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let rest = rest.strip_prefix(b"\r\n").ok_or_else(|| malformed("a boundary line must end with CRLF"))?;
        let head_end = memchr::memmem::find(rest, b"\r\n\r\n").ok_or_else(|| malformed("a part has no header end"))?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| malformed("part headers must be UTF-8"))?;
        let content = &rest[head_end + 4..];
        let end = finder.find(content).ok_or_else(|| malformed("the body ends without a closing boundary"))?;
        let disposition = head
            .split("\r\n")
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim().eq_ignore_ascii_case("content-disposition").then_some(v)
            })
            .ok_or_else(|| malformed("a part has no Content-Disposition"))?;
        let param = |key: &str| {
            disposition.split(';').skip(1).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case(key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        let name = param("name").ok_or_else(|| malformed("a part has no name"))?;
        parts.push(Part { name, file: param("filename").is_some(), data: &content[..end] });
        // Past the CRLF, the part's head and data, and the next boundary line.
        at += 2 + head_end + 4 + end + delimiter.len();
    }
}

/// The multipart form of a batch: each file part (or part named `images`/`image`) is an image, in
/// order; the other parts are options, as text.
fn parse_multipart(boundary: &str, query: &str, body: &[u8], max_batch: usize) -> Result<BatchRequest, ApiError> {
    let mut images = Vec::new();
    let mut fields = Vec::new();
    for part in parts(boundary, body)? {
        if part.file || part.name == "images" || part.name == "image" {
            images.push(Ok(part.data.to_vec()));
            continue;
        }
        let text = std::str::from_utf8(part.data)
            .map_err(|_| ApiError::new(ErrorCode::InvalidOption, format!("option {:?} must be text", part.name)))?;
        // Options arrive as text: written the query string's way (`classes=0,2`).
        fields.push(format!("{}={}", encode(&part.name), encode(text.trim())));
    }
    if images.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "the form has no image parts"));
    }
    within_limit(images.len(), max_batch)?;
    let options = DetectOptions::from_query(query)?.with_query(&fields.join("&"))?;
    without_annotate(&options)?;
    Ok(BatchRequest { images, options })
}

/// Percent-encode a form field for the query-string parser (which decodes it back).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~,".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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

    fn form(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, filename, data) in parts {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
            );
            if let Some(f) = filename {
                body.extend_from_slice(format!("; filename=\"{f}\"\r\nContent-Type: image/png").as_bytes());
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    }

    #[test]
    fn multipart_images_in_order_and_text_options() {
        let ct = "multipart/form-data; boundary=\"XyZ\"";
        let body = form(
            "XyZ",
            &[
                ("conf", None, b"0.5"),
                ("a", Some("a.png"), b"first--XyZ\r\n--Xy"),
                ("classes", None, b"2,0"),
                ("images", None, b"second"),
            ],
        );
        let r = parse_batch_request(Some(ct), "max_det=3", &body, 16).unwrap();
        assert_eq!(r.images.len(), 2);
        assert_eq!(r.images[0].as_deref().unwrap(), b"first--XyZ\r\n--Xy", "data that looks like a boundary");
        assert_eq!(r.images[1].as_deref().unwrap(), b"second");
        assert_eq!((r.options.conf, r.options.max_det), (0.5, 3));
        assert_eq!(r.options.classes, Some(vec![2, 0]));
        let three = form("b", &[("x", Some("1"), b"1"), ("y", Some("2"), b"2"), ("z", Some("3"), b"3")]);
        let e = parse_batch_request(Some("multipart/form-data; boundary=b"), "", &three, 2).unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        let bad_option = form("b", &[("x", Some("1"), b"1"), ("conf", None, b"2")]);
        let e = parse_batch_request(Some("multipart/form-data; boundary=b"), "", &bad_option, 2).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidOption);
        for broken in
            [&b"no boundary here"[..], b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated"]
        {
            let e = parse_batch_request(Some("multipart/form-data; boundary=b"), "", broken, 2).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
        }
        let no_images = form("b", &[("conf", None, b"0.3")]);
        let e = parse_batch_request(Some("multipart/form-data; boundary=b"), "", &no_images, 2).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
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
