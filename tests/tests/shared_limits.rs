//! Per-tenant limits shared by a fleet: two real hosts on one real `redis-server` enforce one
//! rate limit (one burst between them) and one in-flight cap for a tenant; with Redis gone
//! they keep answering, each deciding alone, and count it.
//!
//! The hosts serve the test guest (`/ok` answers at once, `/sleep?ms=N` holds its place), so
//! nothing here waits on inference. Each host has its own data directory; the tenant `test`
//! exists in both (each with its own key), and limits are kept by tenant name.

use std::time::{Duration, Instant};

use yolo_edge_tests::{Host, RedisServer, Reply, fresh_data_dir, models, test_guest};

/// Host one reads the Redis URL and the limits from a config file (`[redis] url`,
/// `[tenant_limits]`), host two from flags (`--redis-url`, `--tenant-*`).
fn two_hosts(redis: &str, rps: u32, burst: u32, max_concurrent: u32) -> (Host, Host) {
    let dir = fresh_data_dir();
    let config = dir.join("yolo-edge.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{redis}\"\n\n[tenant_limits]\nrequests_per_second = {rps}\nburst = {burst}\nmax_concurrent = {max_concurrent}\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let one = Host::start_full(&test_guest(), &models(), &dir, &["--config", &config]).unwrap();
    let (rps, burst, max_concurrent) = (rps.to_string(), burst.to_string(), max_concurrent.to_string());
    let flags = [
        "--redis-url",
        redis,
        "--tenant-rps",
        &rps,
        "--tenant-burst",
        &burst,
        "--tenant-max-concurrent",
        &max_concurrent,
    ];
    let two = Host::start_full(&test_guest(), &models(), &fresh_data_dir(), &flags).unwrap();
    for host in [&one, &two] {
        assert!(host.logs_within("shared through Redis", Duration::from_secs(5)), "{}", host.log());
    }
    (one, two)
}

fn metric(host: &Host, name: &str) -> u64 {
    let text = host.get_with("/metrics", &[]).body;
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn calls(host: &Host) -> u64 {
    host.get("/v1/usage").json()["total"]["calls"].as_u64().unwrap()
}

fn assert_rate_limited(r: &Reply) {
    r.assert_error(429, "rate_limited");
    let retry_after: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{r:?}");
    assert!(r.header("x-invocation-id").is_none(), "nothing billed: {r:?}");
}

#[test]
fn a_tenant_has_one_burst_across_the_fleet() {
    let redis = RedisServer::start().expect("a real redis-server");
    // One request per second, a burst of 4: spread over both hosts, exactly 4 pass.
    let (one, two) = two_hosts(&redis.url, 1, 4, 0);
    let started = Instant::now();
    let replies: Vec<Reply> = (0..10).map(|i| if i % 2 == 0 { &one } else { &two }.post("/ok", None, b"")).collect();
    assert!(started.elapsed() < Duration::from_millis(900), "too slow to test a 1 rps limit: {:?}", started.elapsed());
    let passed = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(passed, 4, "one burst for both hosts: {replies:?}");
    assert!(replies[..4].iter().all(|r| r.status == 200), "the first four pass: {replies:?}");
    replies[4..].iter().for_each(assert_rate_limited);
    assert_eq!(calls(&one) + calls(&two), 4, "refusals are not billed");

    // A second later the shared bucket has one request again, for whichever host asks.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(two.post("/ok", None, b"").status, 200);
    assert_rate_limited(&one.post("/ok", None, b""));
    for host in [&one, &two] {
        assert_eq!(metric(host, "yolo_edge_limits_fallback_total"), 0, "Redis decided every request");
        assert_eq!(metric(host, "yolo_edge_limits_redis_errors_total"), 0);
    }
}

#[test]
fn a_tenant_has_one_in_flight_cap_across_the_fleet() {
    let redis = RedisServer::start().expect("a real redis-server");
    let (one, two) = two_hosts(&redis.url, 0, 0, 2);
    std::thread::scope(|s| {
        // One slow request on each host fills the tenant's cap of 2.
        let slow: Vec<_> =
            [&one, &two].into_iter().map(|h| s.spawn(move || h.post("/sleep?ms=1500", None, b""))).collect();
        std::thread::sleep(Duration::from_millis(400));
        for host in [&one, &two] {
            let r = host.post("/ok", None, b"");
            r.assert_error(429, "concurrency_limited");
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        for s in slow {
            assert_eq!(s.join().unwrap().status, 200);
        }
    });
    // Both finished: their places were given back.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(one.post("/ok", None, b"").status, 200);
    assert_eq!(two.post("/ok", None, b"").status, 200);
    assert_eq!(calls(&one) + calls(&two), 4, "the refused requests are not billed");
}

#[test]
fn without_redis_the_fleet_keeps_answering() {
    let redis = RedisServer::start().expect("a real redis-server");
    let (one, two) = two_hosts(&redis.url, 1, 3, 2);
    assert_eq!(one.post("/ok", None, b"").status, 200);
    assert_eq!(two.post("/ok", None, b"").status, 200);
    drop(redis);
    // Each host now decides alone, from its own bucket (a burst of 3 each): detection goes on.
    for host in [&one, &two] {
        let started = Instant::now();
        let replies: Vec<Reply> = (0..4).map(|_| host.post("/ok", None, b"")).collect();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no request waits on a dead Redis: {:?}",
            started.elapsed()
        );
        let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 200, 429], "the local limiter still limits");
        assert!(metric(host, "yolo_edge_limits_redis_errors_total") >= 1, "the failure is counted");
        assert!(metric(host, "yolo_edge_limits_fallback_total") >= 4, "every check fell back");
        assert!(host.logs_within("Redis unavailable", Duration::from_secs(5)), "and logged");
    }
}
