//! The host driven in-process, without a socket: the app is built as `serve` builds it (the
//! real component, the real model on ONNX Runtime, an SQLite ledger in a temp dir) and every
//! request goes through `server::handle`, the same function the accept loop calls. Fast checks
//! of billing, admission, idempotency, the result cache and the usage API, asserting what the
//! ledger holds afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;
use ureq::http::{self, Request};
use yolo_edge::app::App;
use yolo_edge::cache::CacheScope;
use yolo_edge::config::Config;
use yolo_edge::launch::{Plan, build};
use yolo_edge::settings::Settings;
use yolo_edge_tests::{PostgresServer, component, fresh_data_dir, models, photo_bytes};

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40_000);

/// An app as `serve` builds it, with `config` and its state in a fresh data directory.
async fn app_with(config: Config) -> (Arc<App>, PathBuf) {
    app_auditing(config, |_| "off".to_owned()).await
}

/// An app as [`app_with`] makes it, writing its audit log where `audit` says (given the data
/// directory).
async fn app_auditing(config: Config, audit: impl Fn(&std::path::Path) -> String) -> (Arc<App>, PathBuf) {
    let data_dir = fresh_data_dir();
    let mut settings = Settings::from_config(config, None, "127.0.0.1:0".parse().unwrap(), data_dir.clone());
    settings.audit = audit(&data_dir);
    let plan = Plan::serve(&component(), &models(), "yolov3-tiny", true).expect("the component and models are built");
    (build(plan, &settings).await.expect("the app builds"), data_dir)
}

/// A tenant with `credit` tokens; its `Authorization` header value.
async fn tenant(app: &App, name: &str, credit: i64) -> String {
    format!("Bearer {}", app.store.create_key(name, credit).await.unwrap().key)
}

/// A status, headers and JSON body.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn tokens(&self) -> i64 {
        self.header("x-tokens").parse().unwrap_or_else(|_| panic!("x-tokens in {:?}", self.headers))
    }
}

async fn call(app: &Arc<App>, req: Request<Full<Bytes>>) -> Answer {
    let reply = yolo_edge::server::handle(app.clone(), req, PEER).await;
    let (parts, body) = reply.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn detect(auth: Option<&str>, image: &[u8], extra: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::post("/detect").header("host", "localhost").header("content-type", "image/png");
    if let Some(auth) = auth {
        b = b.header("authorization", auth);
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(image))).unwrap()
}

fn get(path: &str, auth: &str) -> Request<Full<Bytes>> {
    Request::get(path).header("host", "localhost").header("authorization", auth).body(Full::new(Bytes::new())).unwrap()
}

async fn rows(app: &App, tenant: &str) -> Vec<yolo_edge_ledger::LedgerRow> {
    app.store.invocations(tenant, 0, i64::MAX).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detection_is_billed_once_in_the_ledger_and_its_balance() {
    let (app, dir) = app_with(Config::default()).await;
    let auth = tenant(&app, "acme", 1_000_000).await;
    let a = call(&app, detect(Some(&auth), &photo_bytes("coffee.png"), &[("cache-control", "no-store")])).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.body["detections"].as_array().unwrap().iter().any(|d| d["class_name"] == "cup"), "{:?}", a.body);
    let tokens = a.tokens();
    assert!(tokens >= 1000, "at least per_call: {tokens}");
    let rows = rows(&app, "acme").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].entry.id, a.header("x-invocation-id"));
    assert_eq!(rows[0].entry.tokens, tokens);
    assert_eq!(rows[0].entry.outcome, "answered");
    assert!(rows[0].entry.nn_us > 0 && rows[0].entry.fuel > 0, "metered: {:?}", rows[0].entry);
    let balance = app.store.balance("acme").await.unwrap().unwrap();
    assert_eq!(balance, 1_000_000 - tokens);
    assert_eq!(a.header("x-balance"), balance.to_string());
    assert_eq!(app.store.verify().await.unwrap().problem, None);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_run_nothing_and_bill_nothing() {
    let mut config = Config::default();
    config.tenant_limits.requests_per_second = 1;
    config.tenant_limits.burst = 2;
    let (app, dir) = app_with(config).await;
    let image = photo_bytes("coffee.png");

    let a = call(&app, detect(None, &image, &[])).await;
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (401, Some("unauthorized")), "{:?}", a.body);

    let poor = tenant(&app, "poor", 999).await;
    let a = call(&app, detect(Some(&poor), &image, &[])).await;
    assert_eq!((a.status, a.body["error"]["code"].as_str()), (402, Some("insufficient_balance")), "{:?}", a.body);
    assert_eq!(a.header("x-balance"), "999");
    assert!(rows(&app, "poor").await.is_empty(), "a refused call is not recorded");
    assert_eq!(app.store.balance("poor").await.unwrap(), Some(999), "nor billed");

    let busy = tenant(&app, "busy", 1_000_000).await;
    let statuses: Vec<u16> = {
        let mut s = Vec::new();
        for _ in 0..3 {
            s.push(call(&app, detect(Some(&busy), b"not an image", &[])).await.status);
        }
        s
    };
    assert!(
        statuses[..2].iter().all(|s| (400..429).contains(s)),
        "the burst is served (the function refuses the bad image): {statuses:?}"
    );
    assert_eq!(statuses[2], 429, "then the rate limit");
    assert_eq!(rows(&app, "busy").await.len(), 2, "the rate-limited call is not recorded");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_under_an_idempotency_key_is_a_free_replay() {
    let (app, dir) = app_with(Config::default()).await;
    let auth = tenant(&app, "acme", 1_000_000).await;
    let image = photo_bytes("coffee.png");
    let key = [("idempotency-key", "order-42"), ("cache-control", "no-store")];
    let first = call(&app, detect(Some(&auth), &image, &key)).await;
    assert_eq!(first.status, 200);
    let again = call(&app, detect(Some(&auth), &image, &key)).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-replayed"), "true");
    assert_eq!(again.header("x-replay-of"), first.header("x-invocation-id"));
    assert_eq!(again.tokens(), 0);
    assert_eq!(again.body, first.body, "the same answer");
    let other = call(&app, detect(Some(&auth), &photo_bytes("chelsea.png"), &key)).await;
    assert_eq!((other.status, other.body["error"]["code"].as_str()), (422, Some("idempotency_key_reused")));
    let rows = rows(&app, "acme").await;
    assert_eq!(rows.len(), 2, "the run and the replay; the refused reuse is not recorded");
    assert!(rows[1].entry.replay && rows[1].entry.tokens == 0);
    let balance = app.store.balance("acme").await.unwrap().unwrap();
    assert_eq!(balance, 1_000_000 - first.tokens(), "billed once");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_costs_the_cache_price_and_says_so() {
    let (app, dir) = app_with(Config::default()).await;
    let auth = tenant(&app, "acme", 1_000_000).await;
    let image = photo_bytes("coffee.png");
    let miss = call(&app, detect(Some(&auth), &image, &[])).await;
    assert_eq!((miss.status, miss.header("x-cache")), (200, "miss"));
    let hit = call(&app, detect(Some(&auth), &image, &[])).await;
    assert_eq!((hit.status, hit.header("x-cache")), (200, "hit"));
    assert_eq!(hit.tokens(), i64::try_from(Config::default().pricing.per_cache_hit).unwrap());
    assert_eq!(hit.body, miss.body);
    let bypass = call(&app, detect(Some(&auth), &image, &[("cache-control", "no-cache")])).await;
    assert_eq!(bypass.header("x-cache"), "bypass");
    let rows = rows(&app, "acme").await;
    assert_eq!(rows.iter().map(|r| r.entry.cache_hit).collect::<Vec<_>>(), [false, true, false]);
    let spent: i64 = rows.iter().map(|r| r.entry.tokens).sum();
    assert_eq!(app.store.balance("acme").await.unwrap(), Some(1_000_000 - spent));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_api_counts_the_callers_own_calls_only() {
    let (app, dir) = app_with(Config::default()).await;
    let acme = tenant(&app, "acme", 1_000_000).await;
    let other = tenant(&app, "other", 1_000_000).await;
    let image = photo_bytes("coffee.png");
    let a = call(&app, detect(Some(&acme), &image, &[])).await;
    call(&app, detect(Some(&acme), &image, &[])).await;
    let usage = call(&app, get("/v1/usage", &acme)).await;
    assert_eq!(usage.status, 200);
    assert_eq!(usage.body["tenant"], "acme");
    assert_eq!(usage.body["total"]["calls"], 2);
    assert_eq!(usage.body["total"]["cache_hits"], 1);
    let spent: i64 = rows(&app, "acme").await.iter().map(|r| r.entry.tokens).sum();
    assert_eq!(usage.body["total"]["tokens"], spent);
    let id = a.header("x-invocation-id").to_owned();
    let mine = call(&app, get(&format!("/v1/invocations/{id}"), &acme)).await;
    assert_eq!((mine.status, mine.body["id"].as_str()), (200, Some(id.as_str())));
    let theirs = call(&app, get(&format!("/v1/invocations/{id}"), &other)).await;
    assert_eq!(theirs.status, 404, "another tenant's invocation is not found");
    assert_eq!(call(&app, get("/v1/usage", &other)).await.body["total"]["calls"], 0);
    let wrong =
        call(&app, Request::post("/v1/usage").header("authorization", &acme).body(Full::default()).unwrap()).await;
    assert_eq!(wrong.status, 405);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_host_header_is_served() {
    // HTTP/1.0 allows a request without `Host`; it used to fail as `500 function_failed`, billed.
    let (app, dir) = app_with(Config::default()).await;
    let auth = tenant(&app, "acme", 1_000_000).await;
    let req = Request::post("/detect")
        .version(http::Version::HTTP_10)
        .header("authorization", &auth)
        .header("content-type", "image/png")
        .body(Full::new(Bytes::from(photo_bytes("coffee.png"))))
        .unwrap();
    let a = call(&app, req).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["count"], a.body["detections"].as_array().unwrap().len());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_function_found_reaches_the_audit_line_run_replayed_or_cached() {
    let (app, dir) = app_auditing(Config::default(), |dir| dir.join("audit.jsonl").display().to_string()).await;
    let auth = tenant(&app, "acme", 1_000_000).await;
    let image = photo_bytes("coffee.png");
    let keyed = [("idempotency-key", "found-1")];
    let mut answers = Vec::new();
    for extra in [&keyed[..], &keyed[..], &[][..]] {
        let a = call(&app, detect(Some(&auth), &image, extra)).await;
        assert!(a.headers.keys().all(|k| !k.as_str().starts_with("x-yolo-edge-")), "private headers: {:?}", a.headers);
        answers.push(a);
    }
    assert_eq!((answers[1].header("x-replayed"), answers[2].header("x-cache")), ("true", "hit"));
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "{audit}");
    for ((line, answer), what) in lines.iter().zip(&answers).zip(["run", "replay", "cache hit"]) {
        let mut classes: Vec<&str> =
            answer.body["detections"].as_array().unwrap().iter().map(|d| d["class_name"].as_str().unwrap()).collect();
        classes.sort_unstable();
        classes.dedup();
        assert!(classes.contains(&"cup"), "{what}: {:?}", answer.body);
        assert_eq!(line["detections"], answer.body["count"], "{what}: {line}");
        assert_eq!(line["classes"], serde_json::json!(classes), "{what}: {line}");
        assert_eq!(line["invocation_id"], answer.header("x-invocation-id"), "{what}: {line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// 32 calls at once from a tenant whose balance covers 3, spread over `apps` (hosts sharing
/// one ledger): at most 3 + 1 are served, the rest are refused before they run, the balance
/// goes below zero by less than one call's price, and the ledger verifies.
async fn burst_on_a_balance_of_three_calls(apps: &[Arc<App>]) {
    let image = photo_bytes("coffee.png");
    let once = [("cache-control", "no-store")];
    // Each host prices one call first, so its holds are sized from what a call costs here.
    let probe = tenant(&apps[0], "probe", 1_000_000).await;
    let mut price = 0;
    for app in apps {
        price = price.max(call(app, detect(Some(&probe), &image, &once)).await.tokens());
    }
    let auth = tenant(&apps[0], "burst", 3 * price).await;
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let app = apps[i % apps.len()].clone();
            let req = detect(Some(&auth), &image, &once);
            tokio::spawn(async move { call(&app, req).await })
        })
        .collect();
    let mut served = 0;
    for c in calls {
        let a = c.await.unwrap();
        match a.status {
            200 => served += 1,
            _ => assert_eq!(
                (a.status, a.body["error"]["code"].as_str()),
                (402, Some("insufficient_balance")),
                "{:?}",
                a.body
            ),
        }
    }
    let store = &apps[0].store;
    let balance = store.balance("burst").await.unwrap().unwrap();
    assert!((1..=4).contains(&served), "served {served} calls on a balance of 3 (price {price})");
    assert!(balance >= -price, "balance {balance}, below minus one call's price ({price})");
    let rows = rows(&apps[0], "burst").await;
    assert_eq!(rows.len(), served, "every served call has its row; no refused call has one");
    assert_eq!(rows.iter().map(|r| r.entry.tokens).sum::<i64>(), 3 * price - balance);
    assert_eq!(store.verify().await.unwrap().problem, None, "held matches the open holds (none)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_cannot_spend_more_than_the_balance() {
    let (app, dir) = app_with(Config::default()).await;
    burst_on_a_balance_of_three_calls(&[app]).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_across_two_hosts_on_one_postgres_cannot_overdraw() {
    let pg = PostgresServer::start().expect("start postgres");
    let url = pg.create_database("burst").unwrap();
    let config = || {
        let mut c = Config::default();
        c.database.url = Some(url.clone());
        c
    };
    let (a, dir_a) = app_with(config()).await;
    let (b, dir_b) = app_with(config()).await;
    burst_on_a_balance_of_three_calls(&[a.clone(), b.clone()]).await;
    // A key revoked through one host is refused by the other at its next call: every call
    // reads its key from the shared ledger.
    let auth = tenant(&a, "revoked", 1_000_000).await;
    let image = photo_bytes("coffee.png");
    assert_eq!(call(&b, detect(Some(&auth), &image, &[])).await.status, 200);
    a.store.revoke_key(auth.split('_').nth(1).unwrap()).await.unwrap();
    let refused = call(&b, detect(Some(&auth), &image, &[])).await;
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (403, Some("key_revoked")));
    let _ = (std::fs::remove_dir_all(dir_a), std::fs::remove_dir_all(dir_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_another_tenant_only_when_it_is_shared() {
    for (scope, theirs) in [(CacheScope::Tenant, "miss"), (CacheScope::Shared, "hit")] {
        let mut config = Config::default();
        config.cache.scope = scope;
        let (app, dir) = app_with(config).await;
        let (a, b) = (tenant(&app, "alpha", 1_000_000).await, tenant(&app, "bravo", 1_000_000).await);
        let image = photo_bytes("coffee.png");
        assert_eq!(call(&app, detect(Some(&a), &image, &[])).await.header("x-cache"), "miss");
        let other = call(&app, detect(Some(&b), &image, &[])).await;
        assert_eq!(other.header("x-cache"), theirs, "{scope:?}");
        assert_eq!(
            call(&app, detect(Some(&b), &image, &[])).await.header("x-cache"),
            "hit",
            "{scope:?}: its own repeat"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
