//! Bad input gets a clear JSON error with the right status, and the host keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use yolo_edge_tests::{Host, models, photo_bytes};

fn json_post(host: &Host, body: &str) -> yolo_edge_tests::Reply {
    host.post("/detect", Some("application/json"), body.as_bytes())
}

#[test]
fn malformed_requests_are_400() {
    let host = Host::shared();
    json_post(host, "{\"image\": ").assert_error(400, "invalid_json");
    json_post(host, "[1, 2, 3]").assert_error(400, "invalid_json");
    json_post(host, "{}").assert_error(400, "invalid_request");
    json_post(host, r#"{"image": 42}"#).assert_error(400, "invalid_request");
    json_post(host, r#"{"image": "%%% not base64 %%%"}"#).assert_error(400, "invalid_base64");
    json_post(host, r#"{"image": "data:image/png,iVBORw0KGgo="}"#).assert_error(400, "invalid_base64");
    host.post("/detect", Some("image/png"), b"").assert_error(400, "empty_body");

    let png = photo_bytes("coffee.png");
    for query in [
        "conf=2",
        "conf=NaN",
        "conf=-0.5",
        "iou=abc",
        "max_det=0",
        "max_det=100000",
        "classes=x",
        "classes=80",
        "nope=1",
        "model=../models",
    ] {
        host.detect_raw("image/png", &png, query).assert_error(400, "invalid_option");
    }
    for options in [
        json!({"conf": "high"}),
        json!({"max_det": 5000}),
        json!({"classes": [-1]}),
        json!({"classes": [80]}),
        json!({"threshold": 0.3}),
    ] {
        let r = host.detect_json(&png, options.clone());
        r.assert_error(400, "invalid_option");
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 10, "{options}: {r:?}");
    }
    assert!(host.healthy());
}

#[test]
fn unknown_routes_and_models_are_404() {
    let host = Host::shared();
    // (`GET /` is the demo page: tests/tests/web.rs.)
    host.call("GET", "/nope").assert_error(404, "not_found");
    host.post("/v2/detect", Some("image/png"), b"x").assert_error(404, "not_found");
    let r = host.detect_raw("image/png", &photo_bytes("coffee.png"), "model=nope");
    r.assert_error(404, "model_not_found");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("yolov3-tiny"), "lists the models: {r:?}");
    host.detect_json(&photo_bytes("coffee.png"), json!({"model": "nope"})).assert_error(404, "model_not_found");
}

#[test]
fn wrong_methods_are_405() {
    let host = Host::shared();
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let r = host.call(method, "/detect");
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some("POST"), "{method}");
    }
    let r = host.call("POST", "/healthz");
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
}

#[test]
fn unsupported_media_types_are_415() {
    let host = Host::shared();
    let png = photo_bytes("coffee.png");
    host.post("/detect", Some("text/plain"), b"hello").assert_error(415, "unsupported_media_type");
    host.post("/detect", Some("image/gif"), &png).assert_error(415, "unsupported_media_type");
    host.post("/detect", Some("multipart/form-data; boundary=x"), &png).assert_error(415, "unsupported_media_type");
    host.post("/detect", None, b"just some words").assert_error(415, "unsupported_media_type");
    // Without a Content-Type, a real image is recognised by its signature.
    assert_eq!(host.post("/detect", None, &png).status, 200);
}

#[test]
fn undecodable_images_are_422() {
    let host = Host::shared();
    let png = photo_bytes("coffee.png");
    let jpeg = photo_bytes("rocket.jpg");
    host.detect_raw("image/png", &png[..png.len() / 3], "").assert_error(422, "undecodable_image");
    host.detect_raw("image/jpeg", &jpeg[..200], "").assert_error(422, "undecodable_image");
    host.detect_raw("image/png", b"this is a text file, not a picture", "").assert_error(422, "undecodable_image");
    host.detect_raw("image/jpeg", &[0xFF, 0xD8, 0xFF, 0x00, 0x13, 0x37], "").assert_error(422, "undecodable_image");
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    host.detect_raw("image/png", gif, "").assert_error(422, "undecodable_image");
    assert_eq!(host.detect_raw("image/png", &png, "").status, 200, "still serving");
}

#[test]
fn bodies_over_the_limit_are_413_before_reading_them() {
    let host = Host::shared();
    // A declared length over the 20 MiB default: refused from the headers alone.
    let head = format!(
        "POST /detect HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nContent-Length: 22020096\r\n\r\n",
        host.key
    );
    let answer = host.raw(head.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(!answer.contains("x-invocation-id"), "nothing was invoked: {answer}");

    // A chunked body (no length up front) is cut off once it passes the limit.
    let mut stream = TcpStream::connect(host.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let read = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let head = format!(
        "POST /detect HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n",
        host.key
    );
    let _ = stream.write_all(head.as_bytes());
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..24 {
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let answer = read.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains("payload_too_large"));
    assert!(host.healthy());
}

#[test]
fn images_over_the_pixel_limit_are_413() {
    let host = Host::start(&["--max-pixels", "100000"]).unwrap();
    let r = host.detect_raw("image/png", &photo_bytes("coffee.png"), "");
    r.assert_error(413, "image_too_large");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("600x400"), "{r:?}");
    assert!(host.healthy());
}

/// A models directory with the real model plus broken variants of it.
fn broken_models() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("yolo-edge-broken-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let real = models().join("yolov3-tiny");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(real.join("metadata.json")).unwrap()).unwrap();
    let variants = [
        ("yolov3-tiny", meta.clone()),
        // Tells the function to feed 320x320 to a graph fixed at 416x416.
        ("wrong-size", {
            let mut m = meta.clone();
            m["input"]["width"] = json!(320);
            m["input"]["height"] = json!(320);
            m
        }),
        // A model the host has no backend for: the function sees it, wasi-nn does not.
        ("not-loaded", {
            let mut m = meta.clone();
            m["format"] = json!("openvino");
            m
        }),
    ];
    for (name, m) in variants {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(real.join("model.onnx"), d.join("model.onnx")).unwrap();
        // The guest reads labels through WASI, which (rightly) refuses symlinks leaving /models.
        std::fs::copy(real.join("labels.txt"), d.join("labels.txt")).unwrap();
        std::fs::write(d.join("metadata.json"), m.to_string()).unwrap();
    }
    dir
}

#[test]
fn backend_failures_are_500_with_the_backends_message() {
    let dir = broken_models();
    let host = Host::start_with_models(&dir, &[]).unwrap();
    let png = photo_bytes("coffee.png");
    let r = host.detect_raw("image/png", &png, "model=wrong-size");
    r.assert_error(500, "inference_failed");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("ONNX Runtime"), "the backend's own words: {message}");
    assert!(message.contains("dimensions"), "says what was wrong: {message}");
    assert!(r.header("x-invocation-id").is_some(), "a failed invocation is still an invocation");

    host.detect_raw("image/png", &png, "model=not-loaded").assert_error(404, "model_not_found");
    assert_eq!(host.detect_raw("image/png", &png, "").status, 200, "the host keeps serving");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_host_survives_a_barrage_of_bad_input() {
    let mut host = Host::start(&[]).unwrap();
    let png = photo_bytes("coffee.png");
    for i in 0..30usize {
        let body: Vec<u8> = png.iter().take(50 + i * 997).copied().collect();
        let r = host.detect_raw("image/png", &body, "");
        assert!(matches!(r.status, 400 | 422), "{r:?}");
        let _ = host.raw(b"GARBAGE / HTTP/9\r\n\r\n", Duration::from_secs(2));
    }
    assert!(host.is_running());
    assert_eq!(host.detect_raw("image/png", &png, "").json()["count"], 1);
}
