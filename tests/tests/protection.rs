//! Limits, overload, rate limits, metrics, audit log and graceful shutdown.

use std::time::{Duration, Instant};

use serde_json::Value;
use yolo_edge_tests::{Host, Reply, create_key, fresh_data_dir, models, photo_bytes, test_guest};

fn as_key(host: &Host, key: &str, path: &str) -> Reply {
    host.post_with(path, None, b"", &[("authorization", &format!("Bearer {key}"))])
}

#[test]
fn a_decompression_bomb_is_refused_before_it_is_decoded() {
    // A 50 000 x 50 000 PNG: a valid header and a few KB of compressed zero rows.
    let python = yolo_edge_tests::repo().join(".cache/venv/bin/python");
    let script = r#"
import struct, zlib, sys
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
w = h = 50000
raw = zlib.compress(b'\x00' + b'\x00' * (w // 8), 9) # one row of a 1-bit image
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 1, 0, 0, 0, 0)) + chunk(b'IDAT', raw) + chunk(b'IEND', b'')
sys.stdout.buffer.write(png)
"#;
    let out = std::process::Command::new(python).args(["-c", script]).output().unwrap();
    assert!(out.status.success());
    let bomb = out.stdout;
    assert!(bomb.len() < 10_000, "a few KB: {}", bomb.len());
    let host = Host::shared();
    let started = Instant::now();
    let r = host.detect_raw("image/png", &bomb, "");
    r.assert_error(413, "image_too_large");
    assert!(started.elapsed() < Duration::from_secs(2), "refused from the header, not after decoding");
    assert!(r.header_u64("x-memory-bytes") < 64 << 20, "nothing big was allocated");
}

#[test]
fn an_inference_past_its_deadline_is_stopped_and_reported() {
    let host = Host::start(&["--inference-timeout-ms", "1"]).unwrap();
    let r = host.detect_raw("image/png", &photo_bytes("coffee.png"), "");
    r.assert_error(504, "inference_timeout");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("deadline"), "{message}");
    assert!(r.header_u64("x-nn-us") < 1_000_000, "stopped, not left hanging");
    assert!(host.healthy());
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_bills_nothing() {
    let host = Host::start_test_guest(&[
        "--max-instances",
        "1",
        "--queue-size",
        "1",
        "--queue-timeout-ms",
        "300",
        "--tenant-max-concurrent",
        "0",
    ])
    .unwrap();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let host = &host;
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(i * 30));
                    host.post("/sleep?ms=1500", None, b"")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok, 1, "one slot: {replies:?}");
    assert_eq!(busy.len(), 3, "one waited past its timeout, two found the queue full");
    for r in busy {
        r.assert_error(503, "overloaded");
        assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok()), "{r:?}");
        assert!(r.header("x-invocation-id").is_none(), "not billed");
    }
    let usage = host.get("/v1/usage").json();
    assert_eq!(usage["total"]["calls"], 1);
}

#[test]
fn tenants_are_rate_limited_with_retry_after_and_not_billed() {
    let host = Host::start_test_guest(&["--tenant-rps", "1", "--tenant-burst", "2"]).unwrap();
    let a = create_key(&host.data_dir, "a", 1_000_000);
    let b = create_key(&host.data_dir, "b", 1_000_000);
    assert_eq!(as_key(&host, &a, "/ok").status, 200);
    assert_eq!(as_key(&host, &a, "/ok").status, 200);
    let limited = as_key(&host, &a, "/ok");
    limited.assert_error(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    assert!(limited.header("x-invocation-id").is_none());
    assert_eq!(as_key(&host, &b, "/ok").status, 200, "another tenant has its own bucket");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(as_key(&host, &a, "/ok").status, 200, "the bucket refills");
    let usage = host.get_with("/v1/usage", &[("authorization", &format!("Bearer {a}"))]).json();
    assert_eq!(usage["total"]["calls"], 3, "refused requests are not billed");
}

#[test]
fn a_tenant_over_its_concurrency_cap_gets_429() {
    let host = Host::start_test_guest(&["--tenant-max-concurrent", "1"]).unwrap();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let slow = s.spawn(|| host.post("/sleep?ms=800", None, b""));
        std::thread::sleep(Duration::from_millis(200));
        let second = host.post("/ok", None, b"");
        vec![slow.join().unwrap(), second]
    });
    assert_eq!(replies[0].status, 200);
    replies[1].assert_error(429, "concurrency_limited");
    assert_eq!(host.post("/ok", None, b"").status, 200, "free again once the first finished");
}

#[test]
fn metrics_count_requests_latency_tokens_and_refusals() {
    let host = Host::start(&[]).unwrap();
    let png = photo_bytes("coffee.png");
    for _ in 0..2 {
        assert_eq!(host.detect_raw("image/png", &png, "").status, 200);
    }
    host.post_with("/detect", Some("image/png"), &png, &[]).assert_error(401, "unauthorized");
    let r = host.get_with("/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.body;
    assert!(text.contains(r#"yolo_edge_requests_total{route="/detect",status="200"} 2"#), "{text}");
    assert!(text.contains(r#"yolo_edge_requests_total{route="/detect",status="401"} 1"#));
    assert!(text.contains(r#"yolo_edge_refused_total{reason="unauthorized"} 1"#));
    // The repeat was a result-cache hit: one invocation ran, one answer came from the cache.
    assert!(text.contains(r#"yolo_edge_invocation_seconds_count{route="/detect"} 1"#), "{text}");
    assert!(text.contains(r#"yolo_edge_inference_seconds_count{route="/detect"} 1"#));
    assert!(text.contains(r#"yolo_edge_cache_hits_total{tenant="test"} 1"#));
    assert!(text.contains(r#"yolo_edge_tokens_total{tenant="test"}"#));
    assert!(text.contains(r#"yolo_edge_fuel_total{tenant="test"}"#));
    assert!(text.contains("yolo_edge_queue_depth 0"));
    assert!(text.contains("yolo_edge_busy_instances 0"));
}

#[test]
fn the_audit_log_has_one_line_per_request() {
    let host = Host::start(&[]).unwrap();
    let png = photo_bytes("coffee.png");
    let ok = host.detect_raw("image/png", &png, "");
    host.post_with("/detect", Some("image/png"), &png, &[]).assert_error(401, "unauthorized");
    host.detect_raw("image/png", b"junk", "").assert_error(422, "undecodable_image");
    let lines: Vec<Value> = std::fs::read_to_string(host.data_dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["tenant"], "test");
    assert_eq!(first["status"], 200);
    assert_eq!(first["invocation_id"].as_str(), ok.header("x-invocation-id"));
    assert_eq!(first["detections"], 1);
    assert_eq!(first["classes"], serde_json::json!(["cup"]));
    assert_eq!(first["tokens"].as_u64(), Some(ok.header_u64("x-tokens")));
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["status"], 401);
    assert_eq!(lines[1]["refused"], "unauthorized");
    assert!(lines[1]["invocation_id"].is_null());
    assert_eq!(lines[2]["status"], 422);
    assert!(lines[2]["invocation_id"].is_string(), "a bad image still ran the function");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let data = fresh_data_dir();
    let host = Host::start_full(&test_guest(), &models(), &data, &[]).unwrap();
    let key = host.key.clone();
    let url = host.url("/sleep?ms=1500");
    let in_flight = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let r = agent.post(&url).header("authorization", &format!("Bearer {key}")).send(&[][..]);
        r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let code = host.terminate();
    assert_eq!(code, Some(0), "a clean exit");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited for the request");
    assert_eq!(in_flight.join().unwrap(), Ok(200), "the in-flight request was answered");
    let (ok, out, err) = yolo_edge_tests::cli(&data, &["ledger", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 rows"), "and recorded: {out}");
}
