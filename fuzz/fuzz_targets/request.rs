//! Fuzz the function's whole input path: body form, JSON / base64 / data URL / query
//! parsing, option validation, image decoding and letterboxing. Nothing may panic, and every refusal
//! must carry a status the function can answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yolo_core::decode::{DecodeLimits, decode_rgb_for_input};
use yolo_core::letterbox::letterbox_reduced_le_bytes;
use yolo_core::request::parse_detect_request;

const CONTENT_TYPES: [Option<&str>; 6] =
    [None, Some("application/json"), Some("image/png"), Some("image/jpeg"), Some("image/webp"), Some("text/plain")];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    // The first line (up to 64 bytes) is the query string, the rest the body.
    let split = rest.iter().take(64).position(|&b| b == b'\n').unwrap_or(0);
    let query = std::str::from_utf8(&rest[..split]).unwrap_or("");
    let body = &rest[split.min(rest.len())..];
    match parse_detect_request(content_type, query, body) {
        Ok(request) => {
            // Small limits keep each run fast; the limit logic is what is under test.
            let limits = DecodeLimits { max_side: 2048, max_pixels: 1 << 20 };
            // At the model's size or an odd one (a large JPEG may decode reduced).
            let (w, h) = if selector & 0x80 == 0 { (416, 416) } else { (33, 17) };
            match decode_rgb_for_input(&request.image, limits, (w, h), request.options.decode) {
                // Whatever decodes must letterbox.
                Ok(d) => {
                    assert_eq!(d.image.dimensions(), (d.width.div_ceil(d.reduction), d.height.div_ceil(d.reduction)));
                    let (tensor, geometry) =
                        letterbox_reduced_le_bytes(&d.image, (d.width, d.height), w, h, [114, 114, 114]);
                    assert_eq!(tensor.len(), 3 * 4 * (w * h) as usize);
                    assert!(geometry.width <= w && geometry.height <= h);
                }
                Err(e) => assert!(matches!(e.status(), 413 | 415 | 422), "{e}"),
            }
        }
        Err(e) => assert!((400..500).contains(&e.status()), "{e}"),
    }
});
