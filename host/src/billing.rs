//! The billed path of every function request:
//! authenticate → admit (balance covers a call) → read the body (limit) → idempotency →
//! invoke → price → record in the ledger (durably) → answer with `x-tokens`, `x-balance`.
//!
//! Refusals before execution (401, 403, 402, 413, 422 for a reused idempotency key) run
//! nothing and record nothing. Everything after admission runs in its own task, so a
//! client that disconnects mid-request cannot stop the ledger row from being written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, header, request::Parts};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use uuid::Uuid;
use yolo_core::{ApiError, ErrorCode};

use crate::db::now_us;
use crate::idempotency::{self, Claim, ClaimGuard};
use crate::invoke::Outcome;
use crate::ledger::{Entry, Outcome as Recorded, StoredAnswer};
use crate::metering::{Usage, headers};
use crate::pricing::Charge;
use crate::server::{
    App, Reply, declared_too_large, discard_body, function_reply, json_error, read_body, set_header,
};
use crate::tenants::{AuthError, Caller};

/// The JSON answer for a refused key.
pub fn auth_refusal(e: &AuthError) -> Reply {
    let code = match e {
        AuthError::Revoked => ErrorCode::KeyRevoked,
        AuthError::Missing | AuthError::Invalid => ErrorCode::Unauthorized,
    };
    let mut r = json_error(&ApiError::new(code, e.to_string()));
    if code == ErrorCode::Unauthorized {
        set_header(&mut r, "www-authenticate", "Bearer");
    }
    r
}

fn unavailable(e: &anyhow::Error) -> Reply {
    tracing::error!(error = %format!("{e:#}"), "ledger unavailable");
    json_error(&ApiError::new(
        ErrorCode::Internal,
        "the ledger is unavailable; nothing was charged",
    ))
}

/// Handle a request for the function.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let (parts, body) = req.into_parts();
    let caller = match admit(&app, &parts) {
        Ok(caller) => caller,
        Err(refusal) => {
            // Read what the client is sending before answering, so it sees the refusal
            // instead of a reset connection (bounded by the body limit and a few seconds).
            if declared_too_large(&parts, app.max_body_bytes).is_none() {
                discard_body(body, app.max_body_bytes).await;
            }
            return *refusal;
        }
    };
    if let Some(refused) = declared_too_large(&parts, app.max_body_bytes) {
        return refused;
    }
    let body = match read_body(body, app.max_body_bytes).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };

    let key = match parts.headers.get(idempotency::HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => match idempotency::validate_key(k) {
            Ok(()) => Some(k.to_owned()),
            Err(message) => return json_error(&ApiError::new(ErrorCode::InvalidRequest, message)),
        },
        Some(Err(_)) => {
            return json_error(&ApiError::new(
                ErrorCode::InvalidRequest,
                "Idempotency-Key must be visible ASCII",
            ));
        }
    };
    let mut guard = None;
    let mut fingerprint = None;
    if let Some(key) = &key {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path_and_query = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let fp = idempotency::request_fingerprint(
            parts.method.as_str(),
            path_and_query,
            content_type,
            &body,
        );
        match app
            .idempotency
            .claim(&app.db, &caller.tenant, key, &fp)
            .await
        {
            Ok(Claim::Execute(g)) => guard = Some(g),
            Ok(Claim::Replay(answer)) => return replay(app, caller, &parts, answer, peer).await,
            Ok(Claim::Mismatch(answer)) => {
                return json_error(&ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    format!(
                        "Idempotency-Key {key:?} was already used by invocation {} for a different request",
                        answer.invocation_id
                    ),
                ));
            }
            Err(e) => return unavailable(&e),
        }
        fingerprint = Some(fp);
    }

    let task = tokio::spawn(execute(
        app,
        caller,
        parts,
        body,
        key.zip(fingerprint),
        guard,
        peer,
    ));
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "the invocation task failed");
        json_error(&ApiError::new(
            ErrorCode::Internal,
            "the invocation task failed",
        ))
    })
}

/// Authenticate the caller and check that the balance covers a call.
fn admit(app: &App, parts: &Parts) -> Result<Caller, Box<Reply>> {
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = app
        .db
        .authenticate(authorization)
        .map_err(|e| auth_refusal(&e))?;
    let price = app.config.pricing.per_call;
    let balance = app
        .db
        .balance(&caller.tenant)
        .map_err(|e| Box::new(unavailable(&e)))?
        .unwrap_or(0);
    if balance < i64::try_from(price).unwrap_or(i64::MAX) {
        let mut r = json_error(&ApiError::new(
            ErrorCode::InsufficientBalance,
            format!(
                "the balance of tenant {:?} is {balance} tokens, below the price of a call ({price} tokens): add credit",
                caller.tenant
            ),
        ));
        set_header(&mut r, headers::BALANCE, balance.to_string());
        return Err(Box::new(r));
    }
    Ok(caller)
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
    idempotency: Option<(String, String)>,
    _guard: Option<ClaimGuard>,
    peer: SocketAddr,
) -> Reply {
    let id = Uuid::now_v7();
    let ts_us = now_us();
    let route = route_of(&parts);
    let invocation = app
        .invoker
        .invoke(Request::from_parts(parts, Full::new(body)))
        .await;
    let usage = invocation.usage;
    let tokens = app.config.pricing.tokens(&usage, Charge::Executed);
    let mut reply = function_reply(&invocation.outcome);
    let status = reply.status().as_u16();
    let outcome = match &invocation.outcome {
        Outcome::Answered(_) => Recorded::Answered,
        Outcome::Failed(_) => Recorded::Trap,
    };
    let invoked = Invoked {
        id: &id,
        caller: &caller,
        ts_us,
        route,
        status,
        outcome,
    };
    let mut e = invoked.entry(&usage, tokens);
    let body = match &idempotency {
        Some(_) => reply
            .body()
            .clone()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default(),
        None => Bytes::new(),
    };
    let answer = idempotency.map(|(key, request_sha256)| {
        e.idempotency_key = Some(key.clone());
        StoredAnswer {
            tenant: caller.tenant.clone(),
            key,
            request_sha256,
            invocation_id: id.to_string(),
            created_us: ts_us,
            status,
            headers: stored_headers(&reply),
            body: body.to_vec(),
        }
    });
    let db = app.db.clone();
    let recorded = tokio::task::spawn_blocking(move || db.record(&e, answer.as_ref())).await;
    let balance = match recorded {
        Ok(Ok((_, balance))) => balance,
        Ok(Err(e)) => return unavailable(&e),
        Err(e) => return unavailable(&anyhow::anyhow!("{e}")),
    };
    metering_headers(&mut reply, &id, &usage, tokens, balance);
    let failure = match &invocation.outcome {
        Outcome::Failed(msg) => Some(msg.as_str()),
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
        "invocation"
    );
    reply
}

/// Answer a repeated request from its stored answer, recording a free replay row.
async fn replay(
    app: Arc<App>,
    caller: Caller,
    parts: &Parts,
    answer: StoredAnswer,
    peer: SocketAddr,
) -> Reply {
    let started = Instant::now();
    let id = Uuid::now_v7();
    let usage = Usage {
        wall: started.elapsed(),
        ..Usage::default()
    };
    let invoked = Invoked {
        id: &id,
        caller: &caller,
        ts_us: now_us(),
        route: route_of(parts),
        status: answer.status,
        outcome: Recorded::Replay,
    };
    let mut e = invoked.entry(&usage, 0);
    e.idempotency_key = Some(answer.key.clone());
    e.replay_of = Some(answer.invocation_id.clone());
    let db = app.db.clone();
    let balance = match tokio::task::spawn_blocking(move || db.record(&e, None)).await {
        Ok(Ok((_, balance))) => balance,
        Ok(Err(e)) => return unavailable(&e),
        Err(e) => return unavailable(&anyhow::anyhow!("{e}")),
    };
    let mut reply = http::Response::new(Full::new(Bytes::from(answer.body)));
    *reply.status_mut() = http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::OK);
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            reply.headers_mut().append(n, v);
        }
    }
    metering_headers(&mut reply, &id, &usage, 0, balance);
    set_header(&mut reply, headers::REPLAYED, "true");
    set_header(&mut reply, headers::REPLAY_OF, &answer.invocation_id);
    tracing::info!(
        target: "yolo_edge::invocation",
        invocation_id = %id, %peer, tenant = %caller.tenant, status = answer.status, tokens = 0, balance,
        replay_of = %answer.invocation_id, "replay"
    );
    reply
}

/// The function's own headers, kept with an idempotent answer.
fn stored_headers(reply: &Reply) -> Vec<(String, String)> {
    reply
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

fn metering_headers(reply: &mut Reply, id: &Uuid, usage: &Usage, tokens: u64, balance: i64) {
    set_header(reply, headers::INVOCATION_ID, id.to_string());
    set_header(reply, headers::FUEL, usage.fuel.to_string());
    set_header(reply, headers::WALL_US, usage.wall.as_micros().to_string());
    set_header(
        reply,
        headers::NN_US,
        usage.inference.as_micros().to_string(),
    );
    set_header(reply, headers::MEMORY_BYTES, usage.peak_memory.to_string());
    set_header(reply, headers::PIXELS, usage.pixels.to_string());
    set_header(reply, headers::TOKENS, tokens.to_string());
    set_header(reply, headers::BALANCE, balance.to_string());
}
