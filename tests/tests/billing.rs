//! Billing end to end: real SQLite files, the real host, real requests.

use std::collections::HashSet;
use std::process::Command;

use serde_json::Value;
use yolo_edge_tests::{Host, Reply, create_key, photo_bytes, repo};

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn detect_as(host: &Host, key: &str, image: &[u8], extra: &[(&str, &str)]) -> Reply {
    let auth = bearer(key);
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    host.post_with("/detect", Some("image/png"), image, &headers)
}

fn balance(host: &Host, tenant: &str) -> i64 {
    let (ok, out, err) = host.cli(&["credit", "add", "--tenant", tenant, "--tokens", "0", "--note", "probe"]);
    assert!(ok, "{err}");
    // "tenant acme: balance 123 tokens (...)"
    out.split("balance ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).expect("balance")
}

fn usage_json(host: &Host, key: &str, query: &str) -> Value {
    let r = host.get_with(&format!("/v1/usage{query}"), &[("authorization", &bearer(key))]);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn sql(host: &Host, statement: &str) {
    let python = repo().join(".cache/venv/bin/python");
    let db = host.data_dir.join("yolo-edge.sqlite3");
    let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()";
    let out = Command::new(python).args(["-c", script]).arg(db).arg(statement).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn tokens_in_headers_ledger_and_balance_agree_to_the_token() {
    let host = Host::start(&[]).unwrap();
    let key = create_key(&host.data_dir, "acme", 1_000_000);
    let png = photo_bytes("coffee.png");
    let mut sum = 0;
    let mut last_balance = 1_000_000;
    for i in 0..5 {
        let image = if i % 2 == 0 { png.clone() } else { photo_bytes("grace_hopper.png") };
        let r = detect_as(&host, &key, &image, &[]);
        assert_eq!(r.status, 200, "{r:?}");
        let tokens = r.header_u64("x-tokens") as i64;
        // The first of each image runs (at least per_call); its repeats are result-cache hits.
        if i < 2 {
            assert_eq!(r.header("x-cache"), Some("miss"), "{r:?}");
            assert!(tokens >= 1000, "at least the per-call price: {tokens}");
        } else {
            assert_eq!(r.header("x-cache"), Some("hit"), "{r:?}");
            assert_eq!(tokens, 100, "a hit costs per_cache_hit");
        }
        sum += tokens;
        let b: i64 = r.header("x-balance").unwrap().parse().unwrap();
        assert_eq!(b, last_balance - tokens, "x-balance falls by x-tokens");
        last_balance = b;
    }
    assert_eq!(balance(&host, "acme"), 1_000_000 - sum);
    let usage = usage_json(&host, &key, "");
    assert_eq!(usage["tenant"], "acme");
    assert_eq!(usage["total"]["calls"], 5);
    assert_eq!(usage["total"]["tokens"], sum);
    assert_eq!(usage["days"].as_array().unwrap().len(), 1);
    let (ok, out, _) = host.cli(&["usage", "--tenant", "acme", "--format", "json"]);
    assert!(ok);
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["total"]["tokens"], sum);
    let (ok, out, err) = host.cli(&["ledger", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("ledger ok"), "{out}");
}

#[test]
fn identical_requests_burn_identical_fuel() {
    let host = Host::shared();
    let png = photo_bytes("coffee.png");
    // Computed every time (`no-cache`), not answered from the result cache.
    let fresh = [("authorization", bearer(&host.key)), ("cache-control", "no-cache".to_owned())];
    let fresh: Vec<(&str, &str)> = fresh.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let fuel: Vec<u64> =
        (0..3).map(|_| host.post_with("/detect", Some("image/png"), &png, &fresh).header_u64("x-fuel")).collect();
    assert!(fuel[0] > 0);
    assert!(fuel.iter().all(|f| *f == fuel[0]), "{fuel:?}");
    // ... and a different image burns a different amount.
    let other = host.detect_raw("image/png", &photo_bytes("chelsea.png"), "").header_u64("x-fuel");
    assert_ne!(other, fuel[0]);
}

#[test]
fn idempotent_retries_are_billed_once() {
    let host = Host::start(&[]).unwrap();
    let key = create_key(&host.data_dir, "acme", 1_000_000);
    let png = photo_bytes("coffee.png");
    let first = detect_as(&host, &key, &png, &[("idempotency-key", "order-1")]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-replayed"), None);
    let charged = first.header_u64("x-tokens") as i64;
    let again = detect_as(&host, &key, &png, &[("idempotency-key", "order-1")]);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-replayed"), Some("true"));
    assert_eq!(again.header("x-tokens"), Some("0"));
    assert_eq!(again.header("x-replay-of"), first.header("x-invocation-id"));
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(balance(&host, "acme"), 1_000_000 - charged);

    // The same key with another request is refused; another tenant's same key is its own.
    let other_image = detect_as(&host, &key, &photo_bytes("chelsea.png"), &[("idempotency-key", "order-1")]);
    other_image.assert_error(422, "idempotency_key_reused");
    let key_b = create_key(&host.data_dir, "beta", 1_000_000);
    let b = detect_as(&host, &key_b, &png, &[("idempotency-key", "order-1")]);
    assert_eq!(b.header("x-replayed"), None, "keys are per tenant");

    // Concurrent retries: exactly one runs, the others wait for it and replay its answer.
    let results: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..6).map(|_| s.spawn(|| detect_as(&host, &key, &png, &[("idempotency-key", "order-2")]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| r.status == 200));
    let executed: Vec<&Reply> = results.iter().filter(|r| r.header("x-replayed").is_none()).collect();
    assert_eq!(executed.len(), 1, "one execution among concurrent retries");
    let original = executed[0].header("x-invocation-id").unwrap();
    assert!(
        results.iter().filter(|r| r.header("x-replayed").is_some()).all(|r| r.header("x-replay-of") == Some(original))
    );
    let usage = usage_json(&host, &key, "");
    assert_eq!(usage["total"]["calls"], 1 + 1 + 6, "replays are recorded, free");
    assert_eq!(usage["total"]["replays"], 1 + 5);
    let spent = 1_000_000 - balance(&host, "acme");
    assert_eq!(usage["total"]["tokens"], spent);
    assert_eq!(spent, charged + executed[0].header_u64("x-tokens") as i64);
}

#[test]
fn an_exhausted_balance_is_402_and_runs_nothing() {
    let host = Host::start(&[]).unwrap();
    let key = create_key(&host.data_dir, "poor", 1500);
    let png = photo_bytes("coffee.png");
    let first = detect_as(&host, &key, &png, &[]);
    assert_eq!(first.status, 200);
    let left: i64 = first.header("x-balance").unwrap().parse().unwrap();
    assert!(left < 1000);
    let refused = detect_as(&host, &key, &png, &[]);
    refused.assert_error(402, "insufficient_balance");
    assert_eq!(refused.header("x-invocation-id"), None, "nothing ran");
    assert_eq!(balance(&host, "poor"), left, "nothing billed");
    assert_eq!(usage_json(&host, &key, "")["total"]["calls"], 1);
    let (ok, _, err) = host.cli(&["credit", "add", "--tenant", "poor", "--tokens", "5000"]);
    assert!(ok, "{err}");
    assert_eq!(detect_as(&host, &key, &png, &[]).status, 200, "credit restores service");
}

#[test]
fn keys_are_required_checked_and_revocable() {
    let host = Host::start(&[]).unwrap();
    let png = photo_bytes("coffee.png");
    host.post_with("/detect", Some("image/png"), &png, &[]).assert_error(401, "unauthorized");
    host.post_with("/detect", Some("image/png"), &png, &[("authorization", "Bearer nope")])
        .assert_error(401, "unauthorized");
    host.post_with("/detect", Some("image/png"), &png, &[("authorization", "Basic dXNlcjpwdw==")])
        .assert_error(401, "unauthorized");
    host.get_with("/v1/usage", &[]).assert_error(401, "unauthorized");
    assert_eq!(host.get_with("/healthz", &[]).status, 200, "/healthz stays open");

    let (ok, out, _) = host.cli(&["keys", "create", "--tenant", "gamma", "--credit", "100000"]);
    assert!(ok);
    let key = out.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("ye_") && !key.contains(' '), "the key alone on the last line: {out:?}");
    assert_eq!(detect_as(&host, &key, &png, &[]).status, 200);
    let id = key.split('_').nth(1).unwrap();
    let (ok, list, _) = host.cli(&["keys", "list", "--tenant", "gamma"]);
    assert!(ok && list.contains(id) && list.contains("active"), "{list}");
    assert!(!list.contains(&key), "keys list never shows a key");
    let (ok, _, err) = host.cli(&["keys", "revoke", id]);
    assert!(ok, "{err}");
    detect_as(&host, &key, &png, &[]).assert_error(403, "key_revoked");
    let (_, list, _) = host.cli(&["keys", "list"]);
    assert!(list.contains("revoked"), "{list}");
}

#[test]
fn tenants_see_only_their_own_usage() {
    let host = Host::start(&[]).unwrap();
    let a = create_key(&host.data_dir, "alpha", 1_000_000);
    let b = create_key(&host.data_dir, "bravo", 1_000_000);
    let png = photo_bytes("coffee.png");
    let ra = detect_as(&host, &a, &png, &[]);
    detect_as(&host, &b, &png, &[]);
    detect_as(&host, &b, &png, &[]);
    assert_eq!(usage_json(&host, &a, "")["tenant"], "alpha");
    assert_eq!(usage_json(&host, &a, "")["total"]["calls"], 1);
    assert_eq!(usage_json(&host, &b, "")["total"]["calls"], 2);
    let id = ra.header("x-invocation-id").unwrap();
    let own = host.get_with(&format!("/v1/invocations/{id}"), &[("authorization", &bearer(&a))]);
    assert_eq!(own.status, 200, "{own:?}");
    let row = own.json();
    assert_eq!(row["id"], id);
    assert_eq!(row["tenant"], "alpha");
    assert_eq!(row["tokens"].as_u64(), Some(ra.header_u64("x-tokens")));
    assert_eq!(row["fuel"].as_u64(), Some(ra.header_u64("x-fuel")));
    assert_eq!(row["pixels"], 240_000);
    assert_eq!(row["status"], 200);
    assert!(row["hash"].as_str().unwrap().len() == 64);
    let theirs = host.get_with(&format!("/v1/invocations/{id}"), &[("authorization", &bearer(&b))]);
    theirs.assert_error(404, "not_found");

    // Periods: today is in, yesterday is not; bad dates are 400.
    assert_eq!(usage_json(&host, &a, "?from=2000-01-01&to=2000-01-02")["total"]["calls"], 0);
    assert_eq!(usage_json(&host, &a, "?from=2000-01-01")["total"]["calls"], 1);
    host.get_with("/v1/usage?from=yesterday", &[("authorization", &bearer(&a))]).assert_error(400, "invalid_option");
}

#[test]
fn usage_exports_table_csv_and_cloudevents() {
    let host = Host::start(&[]).unwrap();
    let key = create_key(&host.data_dir, "acme", 1_000_000);
    let png = photo_bytes("coffee.png");
    let calls: Vec<(String, u64)> = (0..3)
        .map(|_| {
            let r = detect_as(&host, &key, &png, &[]);
            (r.header("x-invocation-id").unwrap().to_owned(), r.header_u64("x-tokens"))
        })
        .collect();
    let (ok, table, _) = host.cli(&["usage", "--tenant", "acme"]);
    assert!(ok);
    assert!(table.contains("total cost:") && table.contains("CNY"), "{table}");
    let (ok, csv, _) = host.cli(&["usage", "--tenant", "acme", "--format", "csv"]);
    assert!(ok);
    assert!(csv.starts_with("tenant,date,calls,tokens"), "{csv}");
    assert_eq!(csv.lines().count(), 2);
    let (ok, events, _) = host.cli(&["usage", "--tenant", "acme", "--format", "cloudevents"]);
    assert!(ok);
    let events: Vec<Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 3);
    for (e, (id, tokens)) in events.iter().zip(&calls) {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(&e["id"], id, "the event id is the invocation id");
        assert_eq!(e["subject"], "acme");
        assert_eq!(e["data"]["tokens"].as_u64(), Some(*tokens), "the event bills what the answer said");
    }
    assert!(calls[0].1 >= 1000 && calls[1..].iter().all(|c| c.1 == 100), "computed, then cache hits: {calls:?}");
    let (ok, _, err) = host.cli(&["usage", "--tenant", "nobody"]);
    assert!(!ok && err.contains("nobody"));
}

#[test]
fn verify_names_an_edited_and_a_deleted_row() {
    let host = Host::start(&[]).unwrap();
    let key = create_key(&host.data_dir, "acme", 1_000_000);
    let png = photo_bytes("coffee.png");
    for _ in 0..4 {
        assert_eq!(detect_as(&host, &key, &png, &[]).status, 200);
    }
    let (ok, _, _) = host.cli(&["ledger", "verify"]);
    assert!(ok);
    sql(&host, "UPDATE invocations SET tokens = 1 WHERE seq = 2");
    let (ok, _, err) = host.cli(&["ledger", "verify"]);
    assert!(!ok);
    assert!(err.contains("row 2") && err.contains("altered"), "{err}");

    let host = Host::start(&[]).unwrap();
    let key = create_key(&host.data_dir, "acme", 1_000_000);
    for _ in 0..4 {
        assert_eq!(detect_as(&host, &key, &png, &[]).status, 200);
    }
    sql(&host, "DELETE FROM invocations WHERE seq = 3");
    let (ok, _, err) = host.cli(&["ledger", "verify"]);
    assert!(!ok);
    assert!(err.contains("row 3 was removed"), "{err}");
}

#[test]
fn eight_clients_never_lose_or_double_count_a_row() {
    let host = Host::start(&[]).unwrap();
    let key = create_key(&host.data_dir, "busy", 100_000_000);
    let png = photo_bytes("coffee.png");
    let bad = b"not an image".to_vec();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let (host, key, png, bad) = (&host, &key, &png, &bad);
                s.spawn(move || {
                    (0..5)
                        .map(|i| detect_as(host, key, if (c + i) % 4 == 0 { bad } else { png }, &[]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(replies.len(), 40);
    let with_id: Vec<&Reply> = replies.iter().filter(|r| r.header("x-invocation-id").is_some()).collect();
    let ids: HashSet<&str> = with_id.iter().map(|r| r.header("x-invocation-id").unwrap()).collect();
    assert_eq!(ids.len(), with_id.len(), "ids are unique");
    assert!(with_id.iter().all(|r| r.status == 200 || r.status == 422), "only answers and bad images");
    let sum: i64 = with_id.iter().map(|r| r.header_u64("x-tokens") as i64).sum();
    let usage = usage_json(&host, &key, "");
    assert_eq!(usage["total"]["calls"], with_id.len() as i64, "rows == answers carrying an id");
    assert_eq!(usage["total"]["tokens"], sum);
    assert_eq!(balance(&host, "busy"), 100_000_000 - sum);
    let (ok, out, err) = host.cli(&["ledger", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{} rows", with_id.len())), "{out}");
}
