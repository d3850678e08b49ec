//! A guest that traps, loops or exhausts its memory costs the host nothing but a 500 JSON
//! answer: the host keeps serving, and the failed invocation is billed for what it used.

use serde_json::Value;
use yolo_edge_tests::{Host, Reply};

fn row(host: &Host, r: &Reply) -> Value {
    let id = r.header("x-invocation-id").expect("a failed invocation is still an invocation");
    let row = host.get(&format!("/v1/invocations/{id}"));
    assert_eq!(row.status, 200, "{row:?}");
    row.json()
}

#[test]
fn a_trapping_guest_is_a_billed_500_and_the_host_keeps_serving() {
    let mut host = Host::start_test_guest(&[]).unwrap();
    assert_eq!(host.post("/ok", None, b"").status, 200);
    let r = host.post("/trap", None, b"");
    r.assert_error(500, "function_failed");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("unreachable") || message.contains("trap"), "{message}");
    assert!(!message.contains("backtrace") && message.len() < 300, "a short cause, not a backtrace: {message}");
    assert!(r.header_u64("x-tokens") >= 1000, "billed for what it used");
    let recorded = row(&host, &r);
    assert_eq!(recorded["outcome"], "trap");
    assert_eq!(recorded["status"], 500);
    assert!(recorded["fuel"].as_u64().unwrap() > 0);
    assert!(host.log().contains("the test guest was asked to trap"), "the guest's panic reaches the log");
    for _ in 0..3 {
        assert_eq!(host.post("/trap", None, b"").status, 500);
    }
    assert!(host.is_running());
    assert_eq!(host.post("/ok", None, b"").status, 200);
}

#[test]
fn a_looping_guest_runs_out_of_fuel() {
    let host = Host::start_test_guest(&["--fuel-per-invocation", "200000000"]).unwrap();
    let r = host.post("/loop", None, b"");
    r.assert_error(504, "fuel_exhausted");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("fuel"), "{r:?}");
    assert_eq!(r.header_u64("x-fuel"), 200_000_000, "it burnt the whole budget");
    assert!(r.header_u64("x-tokens") >= 1000, "and is billed for it");
    assert_eq!(row(&host, &r)["outcome"], "out_of_fuel");
    assert_eq!(host.post("/ok", None, b"").status, 200);
}

#[test]
fn a_guest_past_its_deadline_is_stopped() {
    let host = Host::start_test_guest(&["--timeout-ms", "400"]).unwrap();
    for path in ["/loop", "/sleep?ms=5000"] {
        let started = std::time::Instant::now();
        let r = host.post(path, None, b"");
        let took = started.elapsed();
        r.assert_error(504, "function_timeout");
        assert!(took < std::time::Duration::from_secs(3), "{path} stopped after {took:?}");
        let wall = r.header_u64("x-wall-us");
        assert!((400_000..2_000_000).contains(&wall), "{path}: wall {wall}µs");
        assert_eq!(row(&host, &r)["outcome"], "timeout");
        assert!(r.header_u64("x-tokens") >= 1000);
    }
    assert_eq!(host.post("/sleep?ms=50", None, b"").status, 200, "short work still passes");
}

#[test]
fn a_guest_out_of_memory_is_contained() {
    let host = Host::start_test_guest(&["--max-memory-mib", "64"]).unwrap();
    let r = host.post("/oom", None, b"");
    r.assert_error(500, "memory_exhausted");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("limit of 64 MiB"), "the message names the limit: {message}");
    assert_eq!(row(&host, &r)["outcome"], "out_of_memory");
    let peak = r.header_u64("x-memory-bytes");
    assert!(peak <= 64 << 20, "peak {peak} within the cap");
    assert!(peak >= 32 << 20, "it did grow: {peak}");
    assert_eq!(host.post("/ok", None, b"").status, 200);
}

/// One request of the bad-input suite: what is sent and what must come back.
struct Bad {
    what: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    key: Option<String>,
    status: u16,
    code: &'static str,
}

fn bad(
    what: &'static str,
    content_type: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Bad {
    Bad { what, path: "/detect".into(), content_type, body: body.into(), key: None, status, code }
}

#[test]
fn thirty_kinds_of_bad_input_each_get_their_status_and_the_host_keeps_serving() {
    use base64::Engine as _;
    let mut host = Host::start(&[]).unwrap();
    let png = yolo_edge_tests::photo_bytes("coffee.png");
    let jpeg = yolo_edge_tests::photo_bytes("rocket.jpg");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let revoked = yolo_edge_tests::create_key(&host.data_dir, "revoked", 1_000_000);
    let (ok, _, _) = host.cli(&["keys", "revoke", revoked.split('_').nth(1).unwrap()]);
    assert!(ok);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut cases = vec![
        bad("malformed JSON", Some("application/json"), "{\"image\": \"abc", 400, "invalid_json"),
        bad("JSON that is not an object", Some("application/json"), "[1,2]", 400, "invalid_json"),
        bad("deeply nested JSON", Some("application/json"), deep, 400, "invalid_json"),
        bad(
            "JSON that is not UTF-8",
            Some("application/json"),
            b"{\"image\": \"\xff\xfe\"}".to_vec(),
            400,
            "invalid_json",
        ),
        bad("JSON without image", Some("application/json"), "{\"conf\": 0.5}", 400, "invalid_request"),
        bad("image that is a number", Some("application/json"), "{\"image\": 7}", 400, "invalid_request"),
        bad("malformed base64", Some("application/json"), "{\"image\": \"@@@@\"}", 400, "invalid_base64"),
        bad(
            "data URL without base64",
            Some("application/json"),
            "{\"image\": \"data:image/png,xyz\"}",
            400,
            "invalid_base64",
        ),
        bad(
            "data URL of text",
            Some("application/json"),
            "{\"image\": \"data:text/plain;base64,aGVsbG8=\"}",
            415,
            "unsupported_media_type",
        ),
        bad("empty body", Some("image/png"), "", 400, "empty_body"),
        bad("wrong content type", Some("text/plain"), png.clone(), 415, "unsupported_media_type"),
        bad("form upload", Some("application/x-www-form-urlencoded"), png.clone(), 415, "unsupported_media_type"),
        bad("text sent as an image", Some("image/png"), "I am a text file, not a photograph", 422, "undecodable_image"),
        bad("truncated PNG", Some("image/png"), png[..png.len() / 2].to_vec(), 422, "undecodable_image"),
        bad("truncated JPEG", Some("image/jpeg"), jpeg[..jpeg.len() / 3].to_vec(), 422, "undecodable_image"),
        bad("JPEG header only", Some("image/jpeg"), jpeg[..4].to_vec(), 422, "undecodable_image"),
        bad(
            "truncated PNG in base64",
            Some("application/json"),
            format!("{{\"image\": \"{}\"}}", b64(&png[..100])),
            422,
            "undecodable_image",
        ),
        bad("a GIF", Some("image/png"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(), 422, "undecodable_image"),
        bad(
            "NaN confidence",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"conf\": NaN}}", b64(&png)),
            400,
            "invalid_json",
        ),
        bad(
            "negative confidence",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"conf\": -1}}", b64(&png)),
            400,
            "invalid_option",
        ),
        bad(
            "IoU above 1",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"iou\": 1.5}}", b64(&png)),
            400,
            "invalid_option",
        ),
        bad(
            "oversized max_det",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"max_det\": 1000000}}", b64(&png)),
            400,
            "invalid_option",
        ),
        bad(
            "class out of range",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"classes\": [999]}}", b64(&png)),
            400,
            "invalid_option",
        ),
        bad(
            "unknown option",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"size\": 640}}", b64(&png)),
            400,
            "invalid_option",
        ),
        bad(
            "unknown model",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"model\": \"yolov99\"}}", b64(&png)),
            404,
            "model_not_found",
        ),
        bad(
            "path-traversing model",
            Some("application/json"),
            format!("{{\"image\": \"{}\", \"model\": \"../../etc\"}}", b64(&png)),
            400,
            "invalid_option",
        ),
    ];
    cases.push(Bad {
        path: "/detect?conf=NaN".into(),
        ..bad("NaN in the query", Some("image/png"), png.clone(), 400, "invalid_option")
    });
    cases.push(Bad {
        path: "/nowhere".into(),
        ..bad("unknown route", Some("image/png"), png.clone(), 404, "not_found")
    });
    cases.push(Bad {
        key: Some("ye_0000_bad".into()),
        ..bad("bad key", Some("image/png"), png.clone(), 401, "unauthorized")
    });
    cases.push(Bad {
        key: Some(revoked.clone()),
        ..bad("revoked key", Some("image/png"), png.clone(), 403, "key_revoked")
    });
    assert!(cases.len() >= 25, "{} kinds", cases.len());
    for case in &cases {
        let key = case.key.clone().unwrap_or_else(|| host.key.clone());
        let auth = format!("Bearer {key}");
        let r = host.post_with(&case.path, case.content_type, &case.body, &[("authorization", &auth)]);
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (case.status, Some(case.code)),
            "{}: {r:?}",
            case.what
        );
        assert!(host.healthy(), "{} left the host unhealthy", case.what);
    }
    // And what does not fit a table: a huge declared body, garbage HTTP, a wrong method.
    let huge = format!(
        "POST /detect HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: 999999999\r\n\r\n",
        host.key
    );
    assert!(host.raw(huge.as_bytes(), std::time::Duration::from_secs(5)).starts_with("HTTP/1.1 413"));
    let garbage = host.raw(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
        std::time::Duration::from_secs(2),
    );
    assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    host.call("GET", "/detect").assert_error(405, "method_not_allowed");
    assert!(host.is_running());
    assert_eq!(host.detect_raw("image/png", &png, "").json()["count"], 1, "still detecting");
}
