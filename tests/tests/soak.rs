//! Soak (heavy, `cargo xtask test --heavy`): saturating mixed load for
//! `YOLO_EDGE_SOAK_SECONDS` (default 600) — good images, bad inputs, oversized bodies,
//! idempotent repeats, a tenant without credit (402) and one over its rate (429) — then a
//! report: requests by status, unexpected answers (any 5xx or transport error: must be 0),
//! ledger rows against billed answers (equal, per tenant), resident memory after warm-up and
//! at the end (bound: at most 25% or 64 MiB more, whichever is larger), and open file
//! descriptors once the clients have gone (back to the idle level).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use yolo_edge_tests::{Host, cli, create_key, photo_bytes};

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    unexpected: Vec<String>,
    /// Invocation ids answered, by tenant.
    ids: HashMap<String, Vec<String>>,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Every ledger row of `tenant`, by invocation id.
fn ledger_ids(host: &Host, tenant: &str) -> HashMap<String, usize> {
    let (ok, out, err) = cli(&host.data_dir, &["usage", "--tenant", tenant, "--format", "cloudevents"]);
    assert!(ok, "{err}");
    let mut ids = HashMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *ids.entry(v["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    ids
}

/// One client: `tenant`'s key, a request mix, until `until`.
fn client(host: &Host, c: usize, tenant: &str, key: &str, until: Instant, tally: &Mutex<Tally>) {
    let images = [photo_bytes("coffee.png"), photo_bytes("grace_hopper.png"), photo_bytes("coffee.jpg")];
    let oversized = vec![0u8; 1536 << 10];
    let agent = agent();
    let auth = format!("Bearer {key}");
    let mut local = Tally::default();
    let mut i = 0usize;
    while Instant::now() < until {
        i += 1;
        let mut req = agent.post(host.url("/detect")).header("authorization", &auth);
        let (body, content_type, expected): (&[u8], &str, &[u16]) = match tenant {
            "broke" => (&images[0], "image/png", &[402]),
            "flood" => (b"not an image", "image/png", &[422, 429]),
            _ => match (c + i) % 20 {
                0..=10 => (&images[(c + i) % 2], "image/png", &[200, 429]),
                11 => (&images[2], "image/jpeg", &[200, 429]),
                12 | 13 => (b"definitely not an image", "image/png", &[422, 429]),
                14..=16 => {
                    req = req.header("idempotency-key", &format!("soak-{c}-{}", i / 40));
                    (&images[0], "image/png", &[200, 429])
                }
                17 => (&oversized, "image/png", &[413, 429]),
                _ => (b"{\"image\": 12", "application/json", &[400, 429]),
            },
        };
        match req.header("content-type", content_type).send(body) {
            Ok(r) => {
                let status = r.status().as_u16();
                *local.by_status.entry(status).or_default() += 1;
                if !expected.contains(&status) {
                    local.unexpected.push(format!("{tenant}: {status} for a {content_type} request"));
                }
                if let Some(id) = r.headers().get("x-invocation-id").and_then(|v| v.to_str().ok()) {
                    local.ids.entry(tenant.to_owned()).or_default().push(id.to_owned());
                }
            }
            Err(e) => {
                local.transport_errors += 1;
                local.unexpected.push(format!("{tenant}: transport error {e}"));
            }
        }
        if tenant == "broke" {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut t = tally.lock().unwrap();
    for (s, n) in local.by_status {
        *t.by_status.entry(s).or_default() += n;
    }
    t.transport_errors += local.transport_errors;
    t.unexpected.extend(local.unexpected);
    for (tenant, ids) in local.ids {
        t.ids.entry(tenant).or_default().extend(ids);
    }
}

#[test]
#[ignore = "heavy: minutes of load; run by `cargo xtask test --heavy` (YOLO_EDGE_SOAK_SECONDS)"]
fn a_soak_of_mixed_load_answers_everything_bills_exactly_and_leaks_nothing() {
    let seconds: u64 = std::env::var("YOLO_EDGE_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let warm_up = Duration::from_secs((seconds / 6).clamp(10, 60));
    let host =
        Host::start(&["--tenant-rps", "40", "--tenant-burst", "40", "--max-body-bytes", "1048576", "--audit", "off"])
            .unwrap();
    let broke = create_key(&host.data_dir, "broke", 0);
    let flood = create_key(&host.data_dir, "flood", 1_000_000_000_000);
    let pid = host.pid();
    // The idle level: after a first answer, with no client connected.
    let first = {
        let r = agent()
            .post(host.url("/detect"))
            .header("authorization", &format!("Bearer {}", host.key))
            .header("content-type", "image/png")
            .send(&photo_bytes("coffee.png")[..])
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.headers()["x-invocation-id"].to_str().unwrap().to_owned()
    };
    std::thread::sleep(Duration::from_secs(1));
    let idle_fds = open_fds(pid);

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tally = Mutex::new(Tally::default());
    tally.lock().unwrap().ids.insert("test".to_owned(), vec![first]);
    let mut rss_warm = 0;
    let mut rss_peak = 0;
    std::thread::scope(|s| {
        let tally = &tally;
        let host = &host;
        let mut clients = Vec::new();
        for c in 0..6 {
            clients.push(s.spawn(move || client(host, c, "test", &host.key, until, tally)));
        }
        clients.push(s.spawn(|| client(host, 0, "broke", &broke, until, tally)));
        for c in 0..2 {
            let flood = &flood;
            clients.push(s.spawn(move || client(host, c, "flood", flood, until, tally)));
        }
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500));
            let rss = rss_kib(pid);
            rss_peak = rss_peak.max(rss);
            if rss_warm == 0 && started.elapsed() >= warm_up {
                rss_warm = rss;
            }
        }
        for c in clients {
            c.join().unwrap();
        }
    });
    let rss_end = rss_kib(pid);
    let t = Instant::now();
    while open_fds(pid) > idle_fds && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let fds_end = open_fds(pid);

    let tally = tally.into_inner().unwrap();
    let requests: u64 = tally.by_status.values().sum::<u64>() + tally.transport_errors;
    let server_errors: u64 = tally.by_status.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum();
    let mut rows_report = Vec::new();
    for tenant in ["test", "broke", "flood"] {
        let answered = tally.ids.get(tenant).cloned().unwrap_or_default();
        let ledger = ledger_ids(&host, tenant);
        rows_report.push((tenant, answered, ledger));
    }
    let bound = (rss_warm / 4).max(64 << 10);
    println!(
        "soak: {seconds} s, {requests} requests ({:.1}/s), by status {:?}, transport errors {}, unexpected 5xx {server_errors}",
        requests as f64 / seconds as f64,
        tally.by_status,
        tally.transport_errors
    );
    for (tenant, answered, ledger) in &rows_report {
        println!("soak: tenant {tenant}: {} billed answers, {} ledger rows", answered.len(), ledger.len());
    }
    println!(
        "soak: RSS {} MiB after {} s of warm-up, {} MiB at the end (peak {} MiB; bound +{} MiB)",
        rss_warm >> 10,
        warm_up.as_secs(),
        rss_end >> 10,
        rss_peak >> 10,
        bound >> 10
    );
    println!("soak: open fds {idle_fds} idle before, {fds_end} after the clients left");

    assert_eq!(server_errors, 0, "unexpected 5xx: {:?}", tally.by_status);
    assert!(
        tally.unexpected.is_empty(),
        "unexpected answers: {:?}",
        &tally.unexpected[..tally.unexpected.len().min(20)]
    );
    assert!(tally.by_status.get(&200).copied().unwrap_or(0) > 0, "images were answered");
    assert!(tally.by_status.contains_key(&402), "the broke tenant was refused");
    for (tenant, answered, ledger) in &rows_report {
        assert!(ledger.values().all(|&n| n == 1), "{tenant}: no row twice");
        assert_eq!(ledger.len(), answered.len(), "{tenant}: ledger rows == billed answers");
        assert!(answered.iter().all(|id| ledger.contains_key(id)), "{tenant}: every billed answer is in the ledger");
    }
    let (ok, out, err) = host.cli(&["ledger", "verify"]);
    assert!(ok && out.contains("ledger ok"), "{out} {err}");
    assert!(rss_end <= rss_warm + bound, "RSS grew from {rss_warm} KiB to {rss_end} KiB");
    assert!(fds_end <= idle_fds, "{fds_end} fds open after the load, {idle_fds} when idle");
}
