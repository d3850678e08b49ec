//! The billed path of every function request:
//! authenticate → admit (rate limit, balance covers a call) → read the body (limit,
//! deadlines) → take a place in the tenant's in-flight count → idempotency → instance slot →
//! invoke → price → record in the ledger (durably) → answer with `x-tokens`, `x-balance`.
//!
//! The body is read before the tenant's in-flight place or an instance slot is taken, so a
//! client that sends slowly (408 after `[http]` deadlines) holds neither. Refusals before
//! execution (401, 403, 402, 408, 413, 429, 422 for a reused idempotency key) run nothing
//! and record nothing. Everything after admission runs in its own task, so a
//! client that disconnects mid-request cannot stop the ledger row from being written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, header, request::Parts};
use http_body_util::{BodyExt as _, Full};
use uuid::Uuid;
use yolo_core::{ApiError, ErrorCode};

use yolo_edge_ledger::{Caller, Entry, Outcome as Recorded, StoredAnswer, now_us};

use crate::admission::{admit, limit_refusal, refused, unavailable};
use crate::app::App;
use crate::audit::RequestFacts;
use crate::cache::{self, CacheKey, CachedAnswer};
use crate::front::{RequestBody, answer_unread, read_body};
use crate::idempotency::{self, Claim, ClaimGuard};
use crate::invoke::{Failure, Outcome};
use crate::limits::{Slot, TenantTicket};
use crate::metering::{Usage, headers};
use crate::pricing::Charge;
use crate::reply::{Reply, function_reply, json_error, no_route, set_header};

/// Handle a request for the function.
pub async fn handle(app: Arc<App>, req: Request<impl RequestBody>, peer: SocketAddr) -> Reply {
    let (parts, body) = req.into_parts();
    // A refusal before the body is read is answered at once (the connection then closes);
    // what the client still sends is read and dropped, so it sees the answer, not a reset.
    let caller = match admit(&app, &parts).await {
        Ok(caller) => caller,
        Err(refusal) => return answer_unread(*refusal, &parts, body, &app.http),
    };
    let tenant = caller.tenant.clone();
    if app.routes.find(parts.uri.path()).is_none() {
        let reply = refused(no_route(parts.uri.path()), Some(&tenant), "no_route");
        return answer_unread(reply, &parts, body, &app.http);
    }
    let body = match read_body(&parts, body, app.max_body_bytes, &app.http).await {
        Ok(b) => b,
        Err((reply, reason)) => return refused(reply, Some(&tenant), reason),
    };
    let ticket = match app.tenants.enter(&tenant).await {
        Ok(ticket) => ticket,
        Err(refusal) => return limit_refusal(refusal, &tenant),
    };

    let key = match parts.headers.get(idempotency::HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => match idempotency::validate_key(k) {
            Ok(()) => Some(k.to_owned()),
            Err(message) => {
                let reply = json_error(&ApiError::new(ErrorCode::InvalidRequest, message));
                return refused(reply, Some(&tenant), "bad_idempotency_key");
            }
        },
        Some(Err(_)) => {
            let reply = json_error(&ApiError::new(ErrorCode::InvalidRequest, "Idempotency-Key must be visible ASCII"));
            return refused(reply, Some(&tenant), "bad_idempotency_key");
        }
    };
    let mut guard = None;
    let mut fingerprint = None;
    if let Some(key) = &key {
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let path_and_query = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let fp = idempotency::request_fingerprint(parts.method.as_str(), path_and_query, content_type, &body);
        match app.idempotency.claim(&*app.store, &caller.tenant, key, &fp).await {
            Ok(Claim::Execute(g)) => guard = Some(g),
            Ok(Claim::Replay(answer)) => {
                let reuse = Reuse::Replay { of: answer.invocation_id.clone(), key: answer.key.clone() };
                let stored = CachedAnswer { status: answer.status, headers: answer.headers, body: answer.body.into() };
                return reuse_answer(app, caller, &parts, stored, reuse, peer).await;
            }
            Ok(Claim::Mismatch(answer)) => {
                let reply = json_error(&ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    format!(
                        "Idempotency-Key {key:?} was already used by invocation {} for a different request",
                        answer.invocation_id
                    ),
                ));
                return refused(reply, Some(&tenant), "idempotency_key_reused");
            }
            Err(e) => return unavailable(&e),
        }
        fingerprint = Some(fp);
    }

    // The result cache: a request answered before is answered again without an instance.
    let cached = cache_plan(&app, &parts, &body);
    if let Some(plan) = cached.as_ref().filter(|p| p.lookup)
        && let Some(hit) = app.cache.get(&plan.key).await
    {
        drop(ticket);
        let reuse = Reuse::CacheHit { idempotency: key.zip(fingerprint), _guard: guard };
        return reuse_answer(app, caller, &parts, hit, reuse, peer).await;
    }

    let slot = match app.slots.acquire().await {
        Ok(slot) => slot,
        Err(refusal) => return limit_refusal(refusal, &tenant),
    };
    let held = Held { _slot: slot, _ticket: ticket, _guard: guard };
    let keep = Keep { idempotency: key.zip(fingerprint), cache: cached };
    let task = tokio::spawn(execute(app, caller, parts, body, keep, held, peer));
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the invocation task failed");
        json_error(&ApiError::new(ErrorCode::Internal, "the invocation task failed"))
    })
}

/// How a request uses the result cache.
struct CachePlan {
    key: CacheKey,
    /// Look it up (not with `Cache-Control: no-cache` / `no-store`).
    lookup: bool,
    /// Store a `200` answer (not with `Cache-Control: no-store`).
    store: bool,
}

/// The cache key of a `POST .../detect` request, when the cache is on and the request and its
/// model can be keyed.
fn cache_plan(app: &App, parts: &Parts, body: &[u8]) -> Option<CachePlan> {
    if !app.cache.enabled() || parts.method != http::Method::POST || !parts.uri.path().ends_with("/detect") {
        return None;
    }
    let invoker = app.routes.find(parts.uri.path())?;
    let component = &invoker.options().component_sha256;
    let identity = |model: &str| app.model_ids.get(model).map(|m| format!("{component}/{m}"));
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let query = parts.uri.query().unwrap_or("");
    let key = CacheKey::of(parts.uri.path(), content_type, query, body, invoker.default_model(), &identity)?;
    let (skip, no_store) = cache::directives(&parts.headers);
    Some(CachePlan { key, lookup: !skip, store: !no_store })
}

/// Where an executed invocation's answer is kept: under the request's idempotency key (with
/// the request's fingerprint), and in the result cache.
struct Keep {
    idempotency: Option<(String, String)>,
    cache: Option<CachePlan>,
}

/// What an executing invocation holds until it is recorded: its instance slot, its place
/// in the tenant's concurrency count, and its idempotency key.
struct Held {
    _slot: Slot,
    _ticket: TenantTicket,
    _guard: Option<ClaimGuard>,
}

fn route_of(parts: &Parts) -> String {
    format!("{} {}", parts.method, parts.uri.path())
}

/// What an invocation was, before its usage is added.
struct Invoked<'a> {
    id: &'a Uuid,
    caller: &'a Caller,
    ts_us: i64,
    route: String,
    status: u16,
    outcome: Recorded,
}

impl Invoked<'_> {
    /// The ledger entry for this invocation with its usage and price.
    fn entry(self, usage: &Usage, tokens: u64) -> Entry {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Entry {
            id: self.id.to_string(),
            tenant: self.caller.tenant.clone(),
            key_id: self.caller.key_id.clone(),
            ts_us: self.ts_us,
            route: self.route,
            status: self.status,
            outcome: self.outcome.as_str().to_owned(),
            fuel: i(usage.fuel),
            wall_us: i(usage.wall.as_micros() as u64),
            nn_us: i(usage.inference.as_micros() as u64),
            peak_memory: i(usage.peak_memory),
            pixels: i(usage.pixels),
            tokens: i(tokens),
            cache_hit: false,
            replay: self.outcome == Recorded::Replay,
            idempotency_key: None,
            replay_of: None,
        }
    }
}

/// Run the function, price it, record it, answer.
async fn execute(
    app: Arc<App>,
    caller: Caller,
    parts: Parts,
    body: Bytes,
    keep: Keep,
    held: Held,
    peer: SocketAddr,
) -> Reply {
    let id = Uuid::now_v7();
    let ts_us = now_us();
    let route = route_of(&parts);
    let Some(invoker) = app.routes.find(parts.uri.path()) else { return no_route(parts.uri.path()) };
    let invocation = invoker.invoke(Request::from_parts(parts, Full::new(body))).await;
    let usage = invocation.usage;
    let tokens = app.pricing.tokens(&usage, Charge::Executed);
    let mut reply = function_reply(&invocation.outcome);
    let status = reply.status().as_u16();
    let outcome = match &invocation.outcome {
        Outcome::Answered(_) => Recorded::Answered,
        Outcome::Failed(Failure::Trap, _) => Recorded::Trap,
        Outcome::Failed(Failure::Timeout, _) => Recorded::Timeout,
        Outcome::Failed(Failure::OutOfFuel, _) => Recorded::OutOfFuel,
        Outcome::Failed(Failure::OutOfMemory, _) => Recorded::OutOfMemory,
    };
    let invoked = Invoked { id: &id, caller: &caller, ts_us, route, status, outcome };
    let mut e = invoked.entry(&usage, tokens);
    let body = reply.body().clone().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let answer = CachedAnswer { status, headers: stored_headers(&reply), body: body.clone() };
    let kept = keep_under_key(&mut e, keep.idempotency, &answer);
    let balance = match record(&app, e, kept).await {
        Ok(balance) => balance,
        Err(refused) => return refused,
    };
    drop(held);
    if let Some(plan) = keep.cache {
        if plan.store && status == 200 && matches!(invocation.outcome, Outcome::Answered(_)) {
            app.cache.put(&plan.key, answer).await;
        }
        set_header(&mut reply, headers::CACHE, if plan.lookup { "miss" } else { "bypass" });
    }
    metering_headers(&mut reply, &id, &usage, tokens, balance);
    let (detections, classes) = detections_of(status, &body);
    reply.extensions_mut().insert(RequestFacts {
        tenant: Some(caller.tenant.clone()),
        invocation_id: Some(id.to_string()),
        tokens: Some(tokens),
        detections,
        classes,
        fuel: Some(usage.fuel),
        wall_seconds: Some(usage.wall.as_secs_f64()),
        inference_seconds: Some(usage.inference.as_secs_f64()),
        ..RequestFacts::default()
    });
    let failure = match &invocation.outcome {
        Outcome::Failed(_, msg) => Some(msg.as_str()),
        Outcome::Answered(_) => None,
    };
    tracing::info!(
        target: "yolo_edge::invocation",
        invocation_id = %id,
        %peer,
        tenant = %caller.tenant,
        status,
        tokens,
        balance,
        fuel = usage.fuel,
        wall_us = usage.wall.as_micros() as u64,
        nn_us = usage.inference.as_micros() as u64,
        nn_queued_us = usage.inference_queued.as_micros() as u64,
        peak_memory = usage.peak_memory,
        pixels = usage.pixels,
        failure,
        detail = invocation.detail,
        "invocation"
    );
    reply
}

/// The answer to store under the request's idempotency key (with its fingerprint), if it has
/// one; the ledger entry then names the key.
fn keep_under_key(e: &mut Entry, idempotency: Option<(String, String)>, answer: &CachedAnswer) -> Option<StoredAnswer> {
    idempotency.map(|(key, request_sha256)| {
        e.idempotency_key = Some(key.clone());
        StoredAnswer {
            tenant: e.tenant.clone(),
            key,
            request_sha256,
            invocation_id: e.id.clone(),
            created_us: e.ts_us,
            status: answer.status,
            headers: answer.headers.clone(),
            body: answer.body.to_vec(),
        }
    })
}

/// Commit the ledger row (and a kept answer) with its charge: the tenant's balance after it,
/// or the 503 answer when the ledger cannot be written (nothing is then charged).
async fn record(app: &App, e: Entry, kept: Option<StoredAnswer>) -> Result<i64, Reply> {
    match app.store.record(e, kept).await {
        Ok((_, balance)) => Ok(balance),
        Err(e) => Err(unavailable(&e)),
    }
}

/// Why a stored answer is given again.
enum Reuse {
    /// An idempotent repeat: free, recorded as a replay of `of`.
    Replay { of: String, key: String },
    /// A result-cache hit: billed `per_cache_hit`; under an idempotency key it is stored for
    /// that key's repeats like any answer.
    CacheHit { idempotency: Option<(String, String)>, _guard: Option<ClaimGuard> },
}

/// Answer from a stored answer (an idempotent replay or a cache hit) without running
/// anything, recording the caller's own ledger row.
async fn reuse_answer(
    app: Arc<App>,
    caller: Caller,
    parts: &Parts,
    stored: CachedAnswer,
    reuse: Reuse,
    peer: SocketAddr,
) -> Reply {
    let started = Instant::now();
    let id = Uuid::now_v7();
    let ts_us = now_us();
    let usage = Usage { wall: started.elapsed(), ..Usage::default() };
    let (outcome, charge) = match reuse {
        Reuse::Replay { .. } => (Recorded::Replay, Charge::Replay),
        Reuse::CacheHit { .. } => (Recorded::Answered, Charge::CacheHit),
    };
    let tokens = app.pricing.tokens(&usage, charge);
    let invoked = Invoked { id: &id, caller: &caller, ts_us, route: route_of(parts), status: stored.status, outcome };
    let mut e = invoked.entry(&usage, tokens);
    let mut kept = None;
    match &reuse {
        Reuse::Replay { of, key } => {
            e.idempotency_key = Some(key.clone());
            e.replay_of = Some(of.clone());
        }
        Reuse::CacheHit { idempotency, .. } => {
            e.cache_hit = true;
            kept = keep_under_key(&mut e, idempotency.clone(), &stored);
        }
    }
    let balance = match record(&app, e, kept).await {
        Ok(balance) => balance,
        Err(refused) => return refused,
    };
    let (detections, classes) = detections_of(stored.status, &stored.body);
    let mut reply = http::Response::new(Full::new(stored.body));
    *reply.status_mut() = http::StatusCode::from_u16(stored.status).unwrap_or(http::StatusCode::OK);
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            reply.headers_mut().append(n, v);
        }
    }
    metering_headers(&mut reply, &id, &usage, tokens, balance);
    let cache_hit = matches!(reuse, Reuse::CacheHit { .. });
    reply.extensions_mut().insert(RequestFacts {
        tenant: Some(caller.tenant.clone()),
        invocation_id: Some(id.to_string()),
        tokens: Some(tokens),
        detections,
        classes,
        cache_hit,
        ..RequestFacts::default()
    });
    match &reuse {
        Reuse::Replay { of, .. } => {
            set_header(&mut reply, headers::REPLAYED, "true");
            set_header(&mut reply, headers::REPLAY_OF, of);
            tracing::info!(
                target: "yolo_edge::invocation",
                invocation_id = %id, %peer, tenant = %caller.tenant, status = stored.status, tokens, balance,
                replay_of = %of, "replay"
            );
        }
        Reuse::CacheHit { .. } => {
            set_header(&mut reply, headers::CACHE, "hit");
            tracing::info!(
                target: "yolo_edge::invocation",
                invocation_id = %id, %peer, tenant = %caller.tenant, status = stored.status, tokens, balance,
                "cache hit"
            );
        }
    }
    reply
}

/// The detection count and distinct class names of a 200 `/detect` answer.
fn detections_of(status: u16, body: &[u8]) -> (Option<u64>, Vec<String>) {
    if status != 200 {
        return (None, Vec::new());
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return (None, Vec::new()) };
    let mut classes: Vec<String> = v["detections"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["class_name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    classes.sort();
    classes.dedup();
    (v["count"].as_u64(), classes)
}

/// The function's own headers, kept with an idempotent answer.
fn stored_headers(reply: &Reply) -> Vec<(String, String)> {
    reply.headers().iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect()
}

fn metering_headers(reply: &mut Reply, id: &Uuid, usage: &Usage, tokens: u64, balance: i64) {
    set_header(reply, headers::INVOCATION_ID, id.to_string());
    set_header(reply, headers::FUEL, usage.fuel.to_string());
    set_header(reply, headers::WALL_US, usage.wall.as_micros().to_string());
    set_header(reply, headers::NN_US, usage.inference.as_micros().to_string());
    set_header(reply, headers::MEMORY_BYTES, usage.peak_memory.to_string());
    set_header(reply, headers::PIXELS, usage.pixels.to_string());
    set_header(reply, headers::INSTANTIATE_US, usage.instantiation.as_micros().to_string());
    set_header(reply, headers::TOKENS, tokens.to_string());
    set_header(reply, headers::BALANCE, balance.to_string());
}
