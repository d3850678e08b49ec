//! `POST /detect/batch` end to end: several images in one call, answers in input order, a bad
//! image failing only its own slot, one ledger row with the summed usage, the batch limit.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use yolo_edge_tests::{Host, photo_bytes};

fn batch(host: &Host, body: &Value) -> yolo_edge_tests::Reply {
    let auth = format!("Bearer {}", host.key);
    host.post_with("/detect/batch", Some("application/json"), body.to_string().as_bytes(), &[("authorization", &auth)])
}

fn calls(host: &Host) -> u64 {
    host.get("/v1/usage").json()["total"]["calls"].as_u64().unwrap()
}

#[test]
fn answers_in_order_with_a_bad_slot_and_one_ledger_row() {
    let host = Host::start(&["--no-result-cache"]).unwrap();
    let (coffee, grace) = (photo_bytes("coffee.png"), photo_bytes("grace_hopper.png"));
    let single = host.detect_raw("image/png", &coffee, "conf=0.3").json();
    let single_grace = host.detect_raw("image/png", &grace, "conf=0.3").json();
    let before = calls(&host);
    let body = json!({
        "images": [STANDARD.encode(&coffee), STANDARD.encode(b"\x89PNG\r\n\x1a\nnot a png"), STANDARD.encode(&grace)],
        "conf": 0.3,
    });
    let r = batch(&host, &body);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["count"], 3, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0], single, "the same answer as /detect, in input order");
    assert_eq!(results[1]["error"]["code"], "undecodable_image", "{v}");
    assert_eq!(results[2], single_grace);
    // One invocation: one ledger row, usage summed over both images.
    assert_eq!(calls(&host), before + 1);
    assert_eq!(r.header_u64("x-pixels"), 600 * 400 + 512 * 600, "both decoded images");
    assert!(r.header_u64("x-tokens") >= 1000);
    let row = host.get(&format!("/v1/invocations/{}", r.header("x-invocation-id").unwrap())).json();
    assert_eq!(row["route"], "POST /detect/batch", "{row}");
    assert_eq!(row["pixels"], 600 * 400 + 512 * 600);
}

#[test]
fn a_multipart_form_is_the_same_batch() {
    let host = Host::shared();
    let (coffee, grace) = (photo_bytes("coffee.png"), photo_bytes("grace_hopper.png"));
    let json_answer = batch(host, &json!({"images": [STANDARD.encode(&coffee), STANDARD.encode(&grace)], "conf": 0.3}));
    assert_eq!(json_answer.status, 200, "{json_answer:?}");
    // As a browser or `curl -F` sends it: two file parts and a text field.
    let boundary = "----yolo-edge-test-7d1c";
    let mut body = Vec::new();
    for (name, data) in [("first", &coffee), ("second", &grace)] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.png\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"conf\"\r\n\r\n0.3\r\n--{boundary}--\r\n")
            .as_bytes(),
    );
    let auth = format!("Bearer {}", host.key);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let form = host.post_with("/detect/batch", Some(&content_type), &body, &[("authorization", &auth)]);
    assert_eq!(form.status, 200, "{form:?}");
    assert_eq!(form.json(), json_answer.json(), "the same answers as the JSON batch");
}

#[test]
fn limits_and_malformed_batches() {
    let host = Host::start(&["--max-batch", "2"]).unwrap();
    let one = STANDARD.encode(photo_bytes("coffee.png"));
    batch(&host, &json!({"images": [one, one, one]})).assert_error(413, "payload_too_large");
    assert_eq!(batch(&host, &json!({"images": [one, one]})).status, 200);
    batch(&host, &json!({"images": []})).assert_error(400, "invalid_request");
    batch(&host, &json!({"image": one})).assert_error(400, "invalid_request");
    batch(&host, &json!({"images": [one], "conf": 3})).assert_error(400, "invalid_option");
    let auth = format!("Bearer {}", host.key);
    let raw =
        host.post_with("/detect/batch", Some("image/png"), &photo_bytes("coffee.png"), &[("authorization", &auth)]);
    raw.assert_error(415, "unsupported_media_type");
    host.get("/detect/batch").assert_error(405, "method_not_allowed");
}
