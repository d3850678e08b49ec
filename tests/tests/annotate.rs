//! `annotate=png|jpeg`: the image with the detections drawn on it, the detections in the
//! `x-detections` header, billed like any detection.

use std::time::Duration;

use image::{GenericImageView as _, Rgb};
use serde_json::Value;
use yolo_edge_tests::{Host, photo_bytes};

/// `POST /detect` with raw bytes back (the harness's `Reply` holds text).
fn post_raw(host: &Host, query: &str, content_type: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut r = agent
        .post(host.url(&format!("/detect{query}")))
        .header("authorization", format!("Bearer {}", host.key))
        .header("content-type", content_type)
        .send(body)
        .expect("POST");
    let headers =
        r.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    (r.status().as_u16(), headers, r.body_mut().read_to_vec().expect("body"))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_cup_is_drawn_on_a_png_and_a_jpeg() {
    let host = Host::shared();
    let coffee = photo_bytes("coffee.png");
    let plain = host.detect_raw("image/png", &coffee, "").json();
    let original = image::load_from_memory(&coffee).unwrap().to_rgb8();

    let (status, headers, body) = post_raw(host, "?annotate=png", "image/png", &coffee);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), Some("image/png"));
    let detections: Value = serde_json::from_str(header(&headers, "x-detections").expect("x-detections")).unwrap();
    assert_eq!(detections, plain, "the header holds the /detect answer");
    // Billed like any detection (or per_cache_hit when the other test of this binary, on the
    // same host, asked for the same annotated image first).
    let tokens: u64 = header(&headers, "x-tokens").expect("x-tokens").parse().unwrap();
    match header(&headers, "x-cache") {
        Some("hit") => assert_eq!(tokens, 100),
        _ => assert!(tokens >= 1000, "{tokens}"),
    }
    let drawn = image::load_from_memory_with_format(&body, image::ImageFormat::Png).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), original.dimensions());

    // The cup's box: its left edge is painted over, its inside is the photograph's.
    let b = &plain["detections"][0]["bbox"];
    let [x1, y1, x2, y2] = [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap().round() as u32);
    let mid = (y1 + y2) / 2;
    let edge = *drawn.get_pixel(x1 + 1, mid);
    assert_ne!(edge, *original.get_pixel(x1 + 1, mid), "the box edge is drawn");
    assert_eq!(edge, *drawn.get_pixel(x2 - 2, mid), "both edges in the class's colour");
    let centre = ((x1 + x2) / 2, mid);
    assert_eq!(drawn.get_pixel(centre.0, centre.1), original.get_pixel(centre.0, centre.1), "inside untouched");
    // A label above the box: a run of the box colour and of text ink.
    let label_row: Vec<Rgb<u8>> = (x1..x1 + 40).map(|x| *drawn.get_pixel(x, y1.saturating_sub(4))).collect();
    assert!(label_row.contains(&edge), "label background in the box colour");
    let changed = drawn.pixels().zip(original.pixels()).filter(|(a, b)| a != b).count();
    assert!(changed < (drawn.width() * drawn.height() / 4) as usize, "only the box and label are drawn: {changed}");

    let (status, headers, body) = post_raw(host, "?annotate=jpeg", "image/png", &coffee);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
    let jpeg = image::load_from_memory_with_format(&body, image::ImageFormat::Jpeg).unwrap();
    assert_eq!(jpeg.dimensions(), original.dimensions());
}

#[test]
fn annotate_in_json_and_bad_values() {
    use base64::Engine as _;
    let host = Host::shared();
    let coffee = photo_bytes("coffee.png");
    let body =
        serde_json::json!({"image": base64::engine::general_purpose::STANDARD.encode(&coffee), "annotate": "png"});
    let (status, headers, bytes) = post_raw(host, "", "application/json", body.to_string().as_bytes());
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/png"));
    assert!(image::load_from_memory(&bytes).is_ok());
    host.detect_raw("image/png", &coffee, "annotate=gif").assert_error(400, "invalid_option");
}
