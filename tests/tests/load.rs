//! Load: saturating concurrency on loopback, then a crash in the middle of it.
//! The short versions run in every `cargo xtask test`; `cargo xtask test --heavy` also runs
//! the long one (`YOLO_EDGE_LOAD_SECONDS`, default 180).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use yolo_edge_tests::{Host, cli, component, fresh_data_dir, models, photo_bytes};

/// What a client saw: the status and the invocation id, or a transport error.
#[derive(Debug, Clone)]
struct Seen {
    status: Option<u16>,
    id: Option<String>,
}

/// `clients` threads send a mix of good, bad and idempotent requests until `stop` or `until`.
fn hammer(host: &Host, clients: usize, until: Duration, stop: &AtomicBool) -> Vec<Seen> {
    let png = photo_bytes("coffee.png");
    let grace = photo_bytes("grace_hopper.png");
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (png, grace) = (&png, &grace);
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(60)))
                        .build()
                        .into();
                    let auth = format!("Bearer {}", host.key);
                    let mut seen = Vec::new();
                    let mut i = 0usize;
                    while started.elapsed() < until && !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let mut req = agent.post(host.url("/detect")).header("authorization", &auth);
                        let mut body: &[u8] = match (c + i) % 5 {
                            0 => b"definitely not an image",
                            1 => grace,
                            _ => png,
                        };
                        if (c + i).is_multiple_of(7) {
                            // A retried request: the same key (and the same body) a few times over.
                            req = req.header("idempotency-key", &format!("client-{c}-{}", i / 14));
                            body = png;
                        }
                        let r = req.header("content-type", "image/png").send(body);
                        seen.push(match r {
                            Ok(r) => Seen {
                                status: Some(r.status().as_u16()),
                                id: r.headers().get("x-invocation-id").and_then(|v| v.to_str().ok()).map(str::to_owned),
                            },
                            Err(_) => Seen { status: None, id: None },
                        });
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// Every invocation id in the ledger (tenant `test`), with how often it appears.
fn ledger_ids(data_dir: &std::path::Path) -> HashMap<String, usize> {
    let (ok, out, err) = cli(data_dir, &["usage", "--tenant", "test", "--format", "cloudevents"]);
    assert!(ok, "{err}");
    let mut ids = HashMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *ids.entry(v["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    ids
}

fn check_load(seconds: u64) {
    // Repeats of one image are result-cache hits, answered in about a millisecond: without a
    // rate limit the clients then go as fast as the ledger records, hits and computed calls
    // mixed, and every answer must still be exactly one row.
    let host = Host::start(&["--tenant-rps", "0"]).unwrap();
    let seen = hammer(&host, 8, Duration::from_secs(seconds), &AtomicBool::new(false));
    assert!(seen.len() >= 16, "{} requests", seen.len());
    let unexpected: Vec<&Seen> = seen.iter().filter(|s| !matches!(s.status, Some(200 | 422))).collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let ids: Vec<&String> = seen.iter().filter_map(|s| s.id.as_ref()).collect();
    assert_eq!(ids.len(), seen.len(), "every answer was an invocation");
    let ledger = ledger_ids(&host.data_dir);
    assert!(ledger.values().all(|&n| n == 1), "no row twice");
    assert_eq!(ledger.len(), ids.len(), "rows == answers carrying an id");
    assert!(ids.iter().all(|id| ledger.contains_key(*id)), "every answered invocation is in the ledger");
    let (ok, out, err) = host.cli(&["ledger", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("ledger ok"));
}

#[test]
fn a_short_load_answers_everything_and_records_each_invocation_once() {
    check_load(6);
}

#[test]
#[ignore = "heavy: minutes of load; run by `cargo xtask test --heavy`"]
fn a_long_load_answers_everything_and_records_each_invocation_once() {
    let seconds = std::env::var("YOLO_EDGE_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    check_load(seconds);
}

#[test]
fn sigkill_in_the_middle_of_a_load_loses_no_answered_invocation() {
    let data = fresh_data_dir();
    let host = Host::start_full(&component(), &models(), &data, &[]).unwrap();
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let load = s.spawn(|| hammer(&host, 6, Duration::from_secs(30), &stop));
        std::thread::sleep(Duration::from_millis(2500));
        // Kill -9 while requests are in flight.
        let _ = std::process::Command::new("kill").args(["-KILL", &host.pid().to_string()]).status();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap()
    });
    drop(host);
    let answered: HashSet<String> = seen.iter().filter_map(|s| s.id.clone()).collect();
    assert!(answered.len() >= 5, "the load ran: {} answers", answered.len());
    assert!(seen.iter().any(|s| s.status.is_none()), "the kill cut some requests off");

    // Restart on the same state: the ledger is intact and holds every answered invocation once.
    let again = Host::start_full(&component(), &models(), &data, &[]).unwrap();
    let (ok, out, err) = again.cli(&["ledger", "verify"]);
    assert!(ok, "verify after the crash: {err}");
    assert!(out.contains("ledger ok"), "{out}");
    let ledger = ledger_ids(&data);
    assert!(ledger.values().all(|&n| n == 1), "no row twice");
    let missing: Vec<&String> = answered.iter().filter(|id| !ledger.contains_key(*id)).collect();
    assert!(missing.is_empty(), "answered but not recorded: {missing:?}");
    assert_eq!(again.detect_raw("image/png", &photo_bytes("coffee.png"), "").status, 200, "serves again");
}
