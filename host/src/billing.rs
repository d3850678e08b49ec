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
use http::{Request, header, request::Parts};
use http_body_util::Full;
use yolo_core::{ApiError, ErrorCode};

use yolo_edge_ledger::{Caller, Entry, Outcome as Recorded, StoredAnswer, now_us};

use crate::admission::{admit, limit_refusal, refused, unavailable};
use crate::answer::Answer;
use crate::app::App;
use crate::audit::RequestFacts;
use crate::cache::{self, CacheKey, CacheScope};
use crate::front::{RequestBody, answer_unread, read_body};
use crate::holds::HoldGuard;
use crate::idempotency::{self, Claim, ClaimGuard};
use crate::invoke::{Failure, Invoker, Outcome};
use crate::limits::{Slot, TenantTicket};
use crate::metering::{Usage, headers};
use crate::pricing::Charge;
use crate::reply::{Reply, answer_of, json_error, no_route, reply_of, set_header};

/// Handle a request for the function.
pub async fn handle(app: Arc<App>, req: Request<impl RequestBody>, peer: SocketAddr) -> Reply {
    let (parts, body) = req.into_parts();
    // A refusal before the body is read is answered at once (the connection then closes);
    // what the client still sends is read and dropped, so it sees the answer, not a reset.
    let (caller, hold) = match admit(&app, &parts).await {
        Ok(admitted) => admitted,
        Err(refusal) => return answer_unread(*refusal, &parts, body, &app.http),
    };
    let tenant = caller.tenant.clone();
    let Some(invoker) = app.routes.find(parts.uri.path()) else {
        let reply = refused(no_route(parts.uri.path()), Some(&tenant), "no_route");
        return answer_unread(reply, &parts, body, &app.http);
    };
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
                let stored = Answer::reported(answer.status, answer.headers, answer.body.into());
                return reuse_answer(app, caller, hold, &parts, stored, reuse, peer).await;
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
    let cached = cache_plan(&app, &invoker, &tenant, &parts, &body);
    if let Some(plan) = cached.as_ref().filter(|p| p.lookup)
        && let Some(hit) = app.cache.get(&plan.key).await
    {
        drop(ticket);
        let reuse = Reuse::CacheHit { idempotency: key.zip(fingerprint), _guard: guard };
        return reuse_answer(app, caller, hold, &parts, hit, reuse, peer).await;
    }

    let slot = match app.slots.acquire().await {
        Ok(slot) => slot,
        Err(refusal) => return limit_refusal(refusal, &tenant),
    };
    let held = Held { _slot: slot, _ticket: ticket, _guard: guard };
    let keep = Keep { idempotency: key.zip(fingerprint), cache: cached };
    let task = tokio::spawn(execute(app, invoker, caller, hold, parts, body, keep, held, peer));
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
fn cache_plan(app: &App, invoker: &Invoker, tenant: &str, parts: &Parts, body: &[u8]) -> Option<CachePlan> {
    if !app.cache.enabled() || parts.method != http::Method::POST || !parts.uri.path().ends_with("/detect") {
        return None;
    }
    let component = &invoker.options().component_sha256;
    let identity = |model: &str| app.model_ids.get(model).map(|m| format!("{component}/{m}"));
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let query = parts.uri.query().unwrap_or("");
    let key = CacheKey::of(parts.uri.path(), content_type, query, body, invoker.default_model(), &identity)?;
    let key = match app.cache_scope {
        CacheScope::Tenant => key.scoped(tenant),
        CacheScope::Shared => key,
    };
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
    id: &'a str,
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
#[allow(clippy::too_many_arguments)] // each is one thing the spawned task owns from here on
async fn execute(
    app: Arc<App>,
    invoker: Arc<Invoker>,
    caller: Caller,
    hold: HoldGuard,
    parts: Parts,
    body: Bytes,
    keep: Keep,
    held: Held,
    peer: SocketAddr,
) -> Reply {
    let id = hold.id().to_owned();
    let ts_us = now_us();
    let route = route_of(&parts);
    let path = parts.uri.path().to_owned();
    let invocation = invoker.invoke(Request::from_parts(parts, Full::new(body))).await;
    let usage = invocation.usage;
    let tokens = app.pricing.tokens(&usage, Charge::Executed);
    app.holds.observe(&caller.tenant, &path, tokens);
    let (outcome, failure) = match &invocation.outcome {
        Outcome::Answered(_) => (Recorded::Answered, None),
        Outcome::Failed(kind, message) => (recorded_failure(*kind), Some(message.clone())),
    };
    let answer = answer_of(invocation.outcome);
    let status = answer.status;
    let invoked = Invoked { id: &id, caller: &caller, ts_us, route, status, outcome };
    let mut e = invoked.entry(&usage, tokens);
    let kept = keep_under_key(&mut e, keep.idempotency, &answer);
    let balance = match record(&app, e, kept, hold).await {
        Ok(balance) => balance,
        Err(refused) => return refused,
    };
    drop(held);
    let mut reply = reply_of(&answer);
    if let Some(plan) = keep.cache {
        if plan.store && status == 200 && failure.is_none() {
            app.cache.put(&plan.key, answer.clone()).await;
        }
        set_header(&mut reply, headers::CACHE, if plan.lookup { "miss" } else { "bypass" });
    }
    metering_headers(&mut reply, &id, &usage, tokens, balance);
    reply.extensions_mut().insert(RequestFacts {
        tenant: Some(caller.tenant.clone()),
        invocation_id: Some(id.to_string()),
        tokens: Some(tokens),
        detections: answer.summary.detections,
        classes: answer.summary.classes,
        fuel: Some(usage.fuel),
        wall_seconds: Some(usage.wall.as_secs_f64()),
        inference_seconds: Some(usage.inference.as_secs_f64()),
        ..RequestFacts::default()
    });
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

/// How the ledger names a failure.
fn recorded_failure(kind: Failure) -> Recorded {
    match kind {
        Failure::Trap => Recorded::Trap,
        Failure::Timeout => Recorded::Timeout,
        Failure::OutOfFuel => Recorded::OutOfFuel,
        Failure::OutOfMemory => Recorded::OutOfMemory,
    }
}

/// The answer to store under the request's idempotency key (with its fingerprint), if it has
/// one; the ledger entry then names the key.
fn keep_under_key(e: &mut Entry, idempotency: Option<(String, String)>, answer: &Answer) -> Option<StoredAnswer> {
    idempotency.map(|(key, request_sha256)| {
        e.idempotency_key = Some(key.clone());
        StoredAnswer {
            tenant: e.tenant.clone(),
            key,
            request_sha256,
            invocation_id: e.id.clone(),
            created_us: e.ts_us,
            status: answer.status,
            headers: answer.stored_headers(),
            body: answer.body.to_vec(),
        }
    })
}

/// Commit the ledger row (and a kept answer) with its charge, capturing the call's hold: what
/// the tenant has left after it (balance less open holds), or the 503 answer when the ledger
/// cannot be written (nothing is then charged, and the hold is released).
async fn record(app: &App, e: Entry, kept: Option<StoredAnswer>, hold: HoldGuard) -> Result<i64, Reply> {
    match app.store.record(e, kept, Some(hold.id().to_owned())).await {
        Ok((_, balance)) => {
            hold.captured();
            Ok(balance)
        }
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
    hold: HoldGuard,
    parts: &Parts,
    stored: Answer,
    reuse: Reuse,
    peer: SocketAddr,
) -> Reply {
    let started = Instant::now();
    let id = hold.id().to_owned();
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
    let balance = match record(&app, e, kept, hold).await {
        Ok(balance) => balance,
        Err(refused) => return refused,
    };
    let mut reply = reply_of(&stored);
    metering_headers(&mut reply, &id, &usage, tokens, balance);
    let cache_hit = matches!(reuse, Reuse::CacheHit { .. });
    reply.extensions_mut().insert(RequestFacts {
        tenant: Some(caller.tenant.clone()),
        invocation_id: Some(id.to_string()),
        tokens: Some(tokens),
        detections: stored.summary.detections,
        classes: stored.summary.classes.clone(),
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

fn metering_headers(reply: &mut Reply, id: &str, usage: &Usage, tokens: u64, balance: i64) {
    set_header(reply, headers::INVOCATION_ID, id);
    set_header(reply, headers::FUEL, usage.fuel.to_string());
    set_header(reply, headers::WALL_US, usage.wall.as_micros().to_string());
    set_header(reply, headers::NN_US, usage.inference.as_micros().to_string());
    set_header(reply, headers::MEMORY_BYTES, usage.peak_memory.to_string());
    set_header(reply, headers::PIXELS, usage.pixels.to_string());
    set_header(reply, headers::INSTANTIATE_US, usage.instantiation.as_micros().to_string());
    set_header(reply, headers::TOKENS, tokens.to_string());
    set_header(reply, headers::BALANCE, balance.to_string());
}
