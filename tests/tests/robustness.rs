//! A guest that traps, loops or exhausts its memory costs the host nothing but a 500 JSON
//! answer: the host keeps serving, and the failed invocation is billed for what it used.

use serde_json::Value;
use yolo_edge_tests::{Host, Reply};

fn row(host: &Host, r: &Reply) -> Value {
    let id = r
        .header("x-invocation-id")
        .expect("a failed invocation is still an invocation");
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
    assert!(
        message.contains("unreachable") || message.contains("trap"),
        "{message}"
    );
    assert!(r.header_u64("x-tokens") >= 1000, "billed for what it used");
    let recorded = row(&host, &r);
    assert_eq!(recorded["outcome"], "trap");
    assert_eq!(recorded["status"], 500);
    assert!(recorded["fuel"].as_u64().unwrap() > 0);
    assert!(
        host.log().contains("the test guest was asked to trap"),
        "the guest's panic reaches the log"
    );
    for _ in 0..3 {
        assert_eq!(host.post("/trap", None, b"").status, 500);
    }
    assert!(host.is_running());
    assert_eq!(host.post("/ok", None, b"").status, 200);
}

#[test]
fn a_looping_guest_runs_out_of_fuel() {
    let host = Host::start_test_guest(&["--fuel-budget", "200000000"]).unwrap();
    let r = host.post("/loop", None, b"");
    r.assert_error(500, "function_failed");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fuel"),
        "{r:?}"
    );
    assert_eq!(
        r.header_u64("x-fuel"),
        200_000_000,
        "it burnt the whole budget"
    );
    assert_eq!(row(&host, &r)["outcome"], "trap");
    assert_eq!(host.post("/ok", None, b"").status, 200);
}

#[test]
fn a_guest_out_of_memory_is_contained() {
    let host = Host::start_test_guest(&["--max-memory-mib", "64"]).unwrap();
    let r = host.post("/oom", None, b"");
    r.assert_error(500, "function_failed");
    let peak = r.header_u64("x-memory-bytes");
    assert!(peak <= 64 << 20, "peak {peak} within the cap");
    assert!(peak >= 32 << 20, "it did grow: {peak}");
    assert_eq!(host.post("/ok", None, b"").status, 200);
}
