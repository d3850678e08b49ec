//! The result cache, end to end: a repeat of the same image + model + options is answered from
//! the cache (`x-cache: hit`), billed `per_cache_hit`, recorded as the caller's own ledger row
//! with `cache_hit`, and counted in `yolo_edge_cache_hits_total`; `Cache-Control` turns it off
//! per request; two hosts on one real Redis share it.

use base64::Engine as _;
use serde_json::{Value, json};
use yolo_edge_tests::{Host, RedisServer, create_key, photo_bytes};

/// `per_cache_hit` in the repository's price sheet (the defaults).
const PER_CACHE_HIT: u64 = 100;

fn detect(host: &Host, key: &str, image: &[u8], query: &str, extra: &[(&str, &str)]) -> yolo_edge_tests::Reply {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    host.post_with(&format!("/detect{query}"), Some("image/png"), image, &headers)
}

fn invocation(host: &Host, key: &str, id: &str) -> Value {
    let r = host.get_with(&format!("/v1/invocations/{id}"), &[("authorization", &format!("Bearer {key}"))]);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// The first request of an image: computed and stored.
fn first_miss(host: &Host, key: &str, image: &[u8], query: &str) -> yolo_edge_tests::Reply {
    let r = detect(host, key, image, query, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-cache"), Some("miss"), "{r:?}");
    assert!(r.header_u64("x-fuel") > 0, "{r:?}");
    r
}

#[test]
fn a_repeat_is_a_cheaper_hit_billed_to_its_own_tenant() {
    let host = Host::start(&[]).unwrap();
    let image = photo_bytes("coffee.png");
    let first = first_miss(&host, &host.key, &image, "?conf=0.3");

    // The same image and options, spelt differently (JSON, base64, defaults named): a hit.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let body = json!({"image": b64, "conf": 0.3, "iou": 0.45}).to_string();
    let auth = format!("Bearer {}", host.key);
    let hit = host.post_with("/detect", Some("application/json"), body.as_bytes(), &[("authorization", &auth)]);
    assert_eq!(hit.status, 200, "{hit:?}");
    assert_eq!(hit.header("x-cache"), Some("hit"));
    assert_eq!(hit.body, first.body, "the stored answer, byte for byte");
    assert_eq!(hit.header_u64("x-tokens"), PER_CACHE_HIT);
    assert_eq!(hit.header_u64("x-fuel"), 0, "nothing ran");
    assert_ne!(hit.header("x-invocation-id"), first.header("x-invocation-id"));
    assert_eq!(
        hit.header_u64("x-balance"),
        first.header_u64("x-balance") - PER_CACHE_HIT,
        "the hit is charged per_cache_hit"
    );
    let row = invocation(&host, &host.key, hit.header("x-invocation-id").unwrap());
    assert_eq!(row["cache_hit"], true, "{row}");
    assert_eq!(row["tokens"], PER_CACHE_HIT);
    let computed = invocation(&host, &host.key, first.header("x-invocation-id").unwrap());
    assert_eq!(computed["cache_hit"], false, "{computed}");

    // Another tenant: the cache is scoped per tenant ([cache] scope = "tenant", the default),
    // so its first call of the same image is a miss (a hit would tell it what the first
    // tenant sent), computed and billed as its own; its repeat is its own hit.
    let other = create_key(&host.data_dir, "other", 10_000);
    let theirs = detect(&host, &other, &image, "?conf=0.3", &[]);
    assert_eq!(theirs.header("x-cache"), Some("miss"), "{theirs:?}");
    assert!(theirs.header_u64("x-fuel") > 0, "it ran: {theirs:?}");
    let again = detect(&host, &other, &image, "?conf=0.3", &[]);
    assert_eq!(again.header("x-cache"), Some("hit"), "{again:?}");
    assert_eq!(again.header_u64("x-balance"), theirs.header_u64("x-balance") - PER_CACHE_HIT);
    let their_row = invocation(&host, &other, theirs.header("x-invocation-id").unwrap());
    assert_eq!(their_row["tenant"], "other", "{their_row}");
    let r = host.get_with(
        &format!("/v1/invocations/{}", first.header("x-invocation-id").unwrap()),
        &[("authorization", &format!("Bearer {other}"))],
    );
    assert_eq!(r.status, 404, "another tenant's row stays invisible: {r:?}");
    let usage = host.get("/v1/usage").json();
    assert_eq!(usage["total"]["cache_hits"], 1, "{usage}");

    // Other options or another image: a miss.
    assert_eq!(detect(&host, &host.key, &image, "?conf=0.5", &[]).header("x-cache"), Some("miss"));
    // Cache-Control: computed again (and, with no-store, not stored).
    let fresh = detect(&host, &host.key, &image, "?conf=0.3", &[("cache-control", "no-cache")]);
    assert_eq!(fresh.header("x-cache"), Some("bypass"));
    assert!(fresh.header_u64("x-fuel") > 0);
    let unstored = detect(&host, &host.key, &image, "?conf=0.6", &[("cache-control", "no-store")]);
    assert_eq!(unstored.header("x-cache"), Some("bypass"));
    assert_eq!(detect(&host, &host.key, &image, "?conf=0.6", &[]).header("x-cache"), Some("miss"));

    let metrics = host.get_with("/metrics", &[]).body;
    assert!(metrics.lines().any(|l| l.starts_with("yolo_edge_cache_hits_total{tenant=\"test\"} 1")), "{metrics}");
    let (ok, out, err) = host.cli(&["ledger", "verify"]);
    assert!(ok, "ledger verify: {out}{err}");
}

#[test]
fn errors_and_idempotent_repeats_are_not_mixed_up_with_hits() {
    let host = Host::start(&[]).unwrap();
    let image = photo_bytes("coffee.png");
    first_miss(&host, &host.key, &image, "");
    // A bad image is never cached: the same bytes fail again, computed.
    let bad = b"\x89PNG\r\n\x1a\nthis is not a PNG".to_vec();
    for _ in 0..2 {
        let r = detect(&host, &host.key, &bad, "", &[]);
        r.assert_error(422, "undecodable_image");
        assert_ne!(r.header("x-cache"), Some("hit"), "{r:?}");
    }
    // A hit under an Idempotency-Key is stored for that key: its repeat is a free replay.
    let hit = detect(&host, &host.key, &image, "", &[("idempotency-key", "k-1")]);
    assert_eq!(hit.header("x-cache"), Some("hit"), "{hit:?}");
    let again = detect(&host, &host.key, &image, "", &[("idempotency-key", "k-1")]);
    assert_eq!(again.header("x-replayed"), Some("true"), "{again:?}");
    assert_eq!(again.header("x-replay-of"), hit.header("x-invocation-id"));
    assert_eq!(again.header_u64("x-tokens"), 0);
    assert_eq!(again.body, hit.body);
}

#[test]
fn the_cache_can_be_turned_off() {
    let host = Host::start(&["--no-result-cache"]).unwrap();
    let image = photo_bytes("coffee.png");
    for _ in 0..2 {
        let r = detect(&host, &host.key, &image, "", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), None, "{r:?}");
        assert!(r.header_u64("x-fuel") > 0);
    }
}

#[test]
fn two_hosts_share_one_redis() {
    let redis = RedisServer::start().expect("a real redis-server");
    let one = Host::start(&["--cache-redis-url", &redis.url]).unwrap();
    let two = Host::start(&["--cache-redis-url", &redis.url]).unwrap();
    let image = photo_bytes("coffee.png");
    let computed = first_miss(&one, &one.key, &image, "?conf=0.35");
    let shared = detect(&two, &two.key, &image, "?conf=0.35", &[]);
    assert_eq!(shared.header("x-cache"), Some("hit"), "{shared:?}");
    assert_eq!(shared.body, computed.body);
    assert_eq!(shared.header_u64("x-tokens"), PER_CACHE_HIT);
    // Each host's ledger has only its own tenant's rows.
    let row = invocation(&two, &two.key, shared.header("x-invocation-id").unwrap());
    assert_eq!(row["cache_hit"], true);
    drop(redis);
    // Redis gone: requests are still answered, computed.
    let without = detect(&two, &two.key, &image, "?conf=0.4", &[]);
    assert_eq!(without.status, 200, "{without:?}");
    assert!(without.header_u64("x-fuel") > 0);
}
