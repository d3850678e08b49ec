//! End-to-end detection: the real host, component, ONNX Runtime, model and photographs,
//! compared with an independent Pillow + onnxruntime reference computed at test time.

use serde_json::{Value, json};
use yolo_edge_tests::{Host, Tolerance, assert_matches_reference, photo_bytes, reference};

/// The tolerance for a photograph: exact decoders for PNG / WebP, see [`Tolerance::jpeg`].
fn tolerance(name: &str, answer: &Value) -> Tolerance {
    if name.ends_with(".jpg") {
        let size = &answer["image"];
        Tolerance::jpeg(size["width"].as_f64().unwrap(), size["height"].as_f64().unwrap(), 416.0)
    } else {
        Tolerance::LOSSLESS
    }
}

const PHOTOS: [(&str, &str); 9] = [
    ("coffee.png", "image/png"),
    ("chelsea.png", "image/png"),
    ("astronaut.png", "image/png"),
    ("motorcycle_left.png", "image/png"),
    ("rocket.jpg", "image/jpeg"),
    ("grace_hopper.jpg", "image/jpeg"),
    ("grace_hopper.png", "image/png"),
    ("large.jpg", "image/jpeg"),
    ("xlarge.jpg", "image/jpeg"),
];

#[test]
fn coffee_has_one_cup() {
    let host = Host::shared();
    let r = host.detect_raw("image/png", &photo_bytes("coffee.png"), "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(v["model"], "yolov3-tiny");
    assert_eq!(v["image"], json!({"width": 600, "height": 400}));
    let cup = &v["detections"][0];
    assert_eq!(cup["class_id"], 41);
    assert_eq!(cup["class_name"], "cup");
    let conf = cup["confidence"].as_f64().unwrap();
    assert!((conf - 0.60).abs() < 0.02, "cup confidence {conf}");
    let expected = [149.0, 22.0, 428.0, 311.0];
    for (k, e) in expected.iter().enumerate() {
        let got = cup["bbox"][k].as_f64().unwrap();
        assert!((got - e).abs() <= 2.0, "bbox[{k}] = {got}, expected about {e}");
    }
}

#[test]
fn raw_bodies_match_the_reference() {
    let host = Host::shared();
    let names: Vec<&str> = PHOTOS.iter().map(|(n, _)| *n).collect();
    let expected = reference(&names, &[]);
    for (name, ct) in PHOTOS {
        let r = host.detect_raw(ct, &photo_bytes(name), "");
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let v = r.json();
        assert_matches_reference(&v, &expected[name], tolerance(name, &v), 0.25, name);
    }
}

#[test]
fn json_bodies_match_the_reference() {
    let host = Host::shared();
    let names: Vec<&str> = PHOTOS.iter().map(|(n, _)| *n).collect();
    let expected = reference(&names, &[]);
    for (name, _) in PHOTOS {
        let r = host.detect_json(&photo_bytes(name), json!({}));
        assert_eq!(r.status, 200, "{name}: {r:?}");
        let v = r.json();
        assert_matches_reference(&v, &expected[name], tolerance(name, &v), 0.25, name);
    }
}

#[test]
fn data_urls_webp_and_jpeg_give_the_same_cup() {
    let host = Host::shared();
    use base64::Engine as _;
    let png = photo_bytes("coffee.png");
    let url = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&png));
    let body = json!({ "image": url }).to_string();
    let from_url = host.post("/detect", Some("application/json"), body.as_bytes());
    assert_eq!(from_url.status, 200, "{from_url:?}");
    let raw = host.detect_raw("image/png", &png, "");
    assert_eq!(from_url.json()["detections"], raw.json()["detections"], "same bytes, same answer");

    // Lossless WebP decodes to the same pixels as the PNG.
    let webp = host.detect_raw("image/webp", &photo_bytes("coffee.webp"), "");
    assert_eq!(webp.status, 200, "{webp:?}");
    assert_eq!(webp.json()["detections"], raw.json()["detections"]);

    // JPEG (quality 95) goes through another decoder than the reference's libjpeg.
    let jpeg = host.detect_raw("image/jpeg", &photo_bytes("coffee.jpg"), "");
    assert_eq!(jpeg.status, 200, "{jpeg:?}");
    let expected = reference(&["coffee.jpg"], &[]);
    let v = jpeg.json();
    assert_matches_reference(&v, &expected["coffee.jpg"], tolerance("coffee.jpg", &v), 0.25, "coffee.jpg");
}

/// A JPEG several times the model input decodes reduced (`decode=auto`, the default: 1/2
/// scale for 2560x1440, still twice what the 416-px input keeps) and answers within the JPEG
/// tolerance of the reference, which decodes it whole; `decode=full` decodes it whole too.
/// `decode=fast` (1/4 scale here, 1/2 for 1280x720) is held to a looser, stated tolerance:
/// 0.05 confidence and 3 px of the model's input grid. Less decoding burns less fuel.
#[test]
fn large_jpegs_decode_reduced_within_the_stated_tolerances() {
    let host = Host::shared();
    for name in ["xlarge.jpg", "large.jpg"] {
        let bytes = photo_bytes(name);
        let expected = reference(&[name], &[]);
        let auth = format!("Bearer {}", host.key);
        let fresh = |query: &str| {
            let headers = [("authorization", auth.as_str()), ("cache-control", "no-cache")];
            let r = host.post_with(&format!("/detect?{query}"), Some("image/jpeg"), &bytes, &headers);
            assert_eq!(r.status, 200, "{name} {query}: {r:?}");
            (r.json(), r.header_u64("x-fuel"))
        };
        let (auto, auto_fuel) = fresh("decode=auto");
        let (full, full_fuel) = fresh("decode=full");
        let (fast, fast_fuel) = fresh("decode=fast");
        for (v, mode) in [(&auto, "auto"), (&full, "full")] {
            assert_matches_reference(v, &expected[name], tolerance(name, v), 0.25, &format!("{name} decode={mode}"));
        }
        let width = fast["image"]["width"].as_f64().unwrap();
        let loose = Tolerance { conf: 0.05, px: 3.0 * width / 416.0 };
        assert_matches_reference(&fast, &expected[name], loose, 0.25, &format!("{name} decode=fast"));
        assert!(fast_fuel < full_fuel * 3 / 4, "{name}: fast {fast_fuel} vs full {full_fuel} fuel");
        if name == "xlarge.jpg" {
            assert!(auto_fuel < full_fuel * 3 / 4, "{name}: auto {auto_fuel} vs full {full_fuel} fuel");
            assert!(fast_fuel < auto_fuel, "{name}: fast {fast_fuel} vs auto {auto_fuel} fuel");
        } else {
            // Under twice the input's size twice over: auto decodes it whole.
            assert_eq!(auto["detections"], full["detections"], "{name}");
        }
    }
    host.detect_raw("image/jpeg", &photo_bytes("large.jpg"), "decode=half").assert_error(400, "invalid_option");
}

#[test]
fn the_cat_is_not_found_by_this_weak_model() {
    let r = Host::shared().detect_raw("image/png", &photo_bytes("chelsea.png"), "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["count"], 0, "{}", r.body);
    assert_eq!(r.json()["detections"], json!([]));
}

#[test]
fn options_change_the_answer_like_the_reference() {
    let host = Host::shared();
    // Lossless, so both pipelines see the same pixels and near-ties rank the same way.
    let image = photo_bytes("grace_hopper.png");
    let cases: [(&str, Value, &[&str]); 4] = [
        ("conf=0.1", json!({"conf": 0.1}), &["--conf", "0.1"]),
        ("conf=0.1&max_det=2", json!({"conf": 0.1, "max_det": 2}), &["--conf", "0.1", "--max-det", "2"]),
        ("conf=0.1&classes=0", json!({"conf": 0.1, "classes": [0]}), &["--conf", "0.1", "--classes", "0"]),
        ("conf=0.1&iou=0.1", json!({"conf": 0.1, "iou": 0.1}), &["--conf", "0.1", "--iou", "0.1"]),
    ];
    let mut counts = Vec::new();
    for (query, body, ref_args) in cases {
        let expected = reference(&["grace_hopper.png"], ref_args);
        let raw = host.detect_raw("image/png", &image, query);
        assert_eq!(raw.status, 200, "{query}: {raw:?}");
        let v = raw.json();
        assert_matches_reference(&v, &expected["grace_hopper.png"], Tolerance::LOSSLESS, 0.1, query);
        let js = host.detect_json(&image, body.clone());
        assert_eq!(js.json()["detections"], raw.json()["detections"], "{body} vs ?{query}");
        counts.push(raw.json()["count"].as_u64().unwrap());
    }
    // The options really changed something: a low threshold finds several boxes, max_det
    // caps them, the class filter keeps only people, a stricter NMS drops overlaps.
    assert!(counts[0] >= 3, "conf=0.1 found {}", counts[0]);
    assert_eq!(counts[1], 2);
    assert!(counts[2] >= 1 && counts[2] < counts[0]);
    assert!(counts[3] < counts[0]);
    let people = host.detect_raw("image/png", &image, "conf=0.1&classes=0").json();
    assert!(people["detections"].as_array().unwrap().iter().all(|d| d["class_name"] == "person"));
}

#[test]
fn every_answer_is_metered() {
    let host = Host::shared();
    let auth = format!("Bearer {}", host.key);
    // Computed (`no-cache`): other tests of this binary send the same image to this host.
    let headers = [("authorization", auth.as_str()), ("cache-control", "no-cache")];
    let r = host.post_with("/detect", Some("image/png"), &photo_bytes("coffee.png"), &headers);
    assert_eq!(r.status, 200);
    let id = r.header("x-invocation-id").expect("x-invocation-id");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "7", "UUIDv7: {id}");
    let (fuel, wall, nn) = (r.header_u64("x-fuel"), r.header_u64("x-wall-us"), r.header_u64("x-nn-us"));
    assert!(fuel > 1_000_000, "a decode + letterbox burns millions of instructions, got {fuel}");
    assert!(nn > 1000, "inference takes milliseconds, got {nn}µs");
    assert!(wall > nn, "wall {wall}µs must include inference {nn}µs");
    assert_eq!(r.header_u64("x-pixels"), 600 * 400);
    assert!(r.header_u64("x-memory-bytes") > 1 << 20);
    assert!(r.header("x-yolo-edge-pixels").is_none(), "the guest's private header is removed");

    let other = host.detect_raw("image/png", &photo_bytes("coffee.png"), "");
    assert_ne!(other.header("x-invocation-id"), Some(id), "ids are unique");
    // A bigger image costs more fuel.
    let big = host.detect_raw("image/jpeg", &photo_bytes("large.jpg"), "");
    assert!(big.header_u64("x-fuel") > fuel, "{} vs {fuel}", big.header_u64("x-fuel"));
    assert_eq!(big.header_u64("x-pixels"), 1280 * 720);

    let log = host.log();
    assert!(log.contains(id), "one structured log line per invocation:\n{log}");
}

#[test]
fn health_lists_the_models() {
    let r = Host::shared().call("GET", "/healthz");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["default_model"], "yolov3-tiny");
    assert_eq!(v["models"], json!(["yolov3-tiny"]));
}

#[test]
fn concurrent_requests_all_succeed_with_the_same_answer() {
    let host = Host::shared();
    let image = photo_bytes("coffee.png");
    let first = host.detect_raw("image/png", &image, "").json();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6).map(|_| s.spawn(|| host.detect_raw("image/png", &image, ""))).collect();
        for h in handles {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.json(), first);
        }
    });
}
