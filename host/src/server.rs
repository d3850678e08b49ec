//! The HTTP front: accept connections (hyper), route each request, shut down gracefully.
//!
//! Routes: `GET /healthz` (open, unbilled), `GET /metrics` (Prometheus), `GET /v1/usage`
//! and `GET /v1/invocations/{id}` ([`crate::api`], answered by the host); everything else
//! goes to the function through [`crate::billing`] (authenticated, admitted, metered,
//! recorded). Every request ends with one audit line and its metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use yolo_core::{ApiError, ErrorCode};

use crate::audit::{AuditLog, RequestFacts};
use crate::config::Config;
use crate::db::Db;
use crate::idempotency::Idempotency;
use crate::invoke::{Failure, Invoker, Outcome};
use crate::limits::{Slots, TenantGate};
use crate::metrics::{Metrics, route_label};

/// Default request body limit: 20 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 << 20;

/// Everything a request needs, shared by all connections.
pub struct App {
    /// The components, by route.
    pub routes: Routes,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Tenants, keys, ledger.
    pub db: Arc<Db>,
    /// Prices and token value.
    pub config: Config,
    /// Requests in flight per idempotency key.
    pub idempotency: Idempotency,
    /// Instance slots and their wait queue.
    pub slots: Slots,
    /// Per-tenant rate and concurrency limits.
    pub tenants: TenantGate,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The audit log.
    pub audit: AuditLog,
}

/// Components by HTTP route (Spin route syntax), most specific first.
pub struct Routes(Vec<(String, Invoker)>);

impl Routes {
    /// Routes in the order given (put exact paths before prefixes, longer prefixes first).
    pub fn new(entries: Vec<(String, Invoker)>) -> Self {
        Self(entries)
    }

    /// One component for every path (`/...`), as `serve` has.
    pub fn single(invoker: Invoker) -> Self {
        Self(vec![("/...".to_owned(), invoker)])
    }

    /// The component serving `path`.
    pub fn find(&self, path: &str) -> Option<&Invoker> {
        self.0.iter().find(|(route, _)| crate::manifest::route_matches(route, path)).map(|(_, i)| i)
    }

    /// Every invoker.
    pub fn invokers(&self) -> impl Iterator<Item = &Invoker> {
        self.0.iter().map(|(_, i)| i)
    }
}

/// The answer when no component serves a path.
pub fn no_route(path: &str) -> Reply {
    json_error(&ApiError::new(ErrorCode::NotFound, format!("no component serves {path:?}")))
}

/// The response type of every route.
pub type Reply = Response<Full<Bytes>>;

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting and let
/// in-flight requests finish (up to `drain` long).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(app, req, peer).await) }
        });
        let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "gave up waiting for connections to close"),
    }
    Ok(())
}

async fn route(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let started = std::time::Instant::now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let mut reply = match path.as_str() {
        "/healthz" => unbilled(&app, req).await,
        "/metrics" if method == http::Method::GET => metrics(&app),
        "/v1/usage" => crate::api::handle(&app, req).await,
        p if p.starts_with("/v1/invocations/") => crate::api::handle(&app, req).await,
        _ => crate::billing::handle(app.clone(), req, peer).await,
    };
    let facts = reply.extensions_mut().remove::<RequestFacts>().unwrap_or_default();
    observe(&app, &path, reply.status().as_u16(), &facts);
    app.audit.record(peer, method.as_str(), &path, reply.status().as_u16(), &facts, started.elapsed());
    reply
}

/// Count a finished request in the metrics.
fn observe(app: &App, path: &str, status: u16, facts: &RequestFacts) {
    let m = &app.metrics;
    let route = route_label(path);
    m.requests.with_label_values(&[route, &status.to_string()]).inc();
    if let Some(reason) = facts.refused {
        m.refused.with_label_values(&[reason]).inc();
    }
    if let Some(wall) = facts.wall_seconds {
        m.invocation_seconds.with_label_values(&[route]).observe(wall);
    }
    if let Some(nn) = facts.inference_seconds {
        m.inference_seconds.with_label_values(&[route]).observe(nn);
    }
    if let (Some(tenant), Some(tokens)) = (&facts.tenant, facts.tokens) {
        m.tokens.with_label_values(&[tenant]).inc_by(tokens);
    }
    if let (Some(tenant), Some(fuel)) = (&facts.tenant, facts.fuel) {
        m.fuel.with_label_values(&[tenant]).inc_by(fuel);
    }
    if facts.cache_hit
        && let Some(tenant) = &facts.tenant
    {
        m.cache_hits.with_label_values(&[tenant]).inc();
    }
}

/// `GET /metrics`: Prometheus text format.
fn metrics(app: &App) -> Reply {
    app.metrics.queue_depth.set(app.slots.queue_depth() as i64);
    app.metrics.busy_instances.set(app.slots.busy() as i64);
    let mut r = Response::new(Full::new(Bytes::from(app.metrics.render())));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

/// A JSON error answer.
pub fn json_error(e: &ApiError) -> Reply {
    json_reply(e.status(), e.to_json())
}

/// A JSON answer with a status.
pub fn json_reply(status: u16, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Set a header from text (ignored when the text is not a valid header value).
pub fn set_header(r: &mut Reply, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        r.headers_mut().insert(name, v);
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("the request body is larger than the limit of {limit} bytes"))
}

/// The declared `Content-Length` is over the limit (checked before reading anything).
pub fn declared_too_large(parts: &Parts, limit: usize) -> Option<Reply> {
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    declared.is_some_and(|n| n > limit as u64).then(|| json_error(&too_large(limit)))
}

/// Read the whole body, refusing (413) once it passes `limit` (chunked bodies included).
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Reply> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(json_error(&too_large(limit))),
        Err(e) => {
            Err(json_error(&ApiError::new(ErrorCode::InvalidRequest, format!("could not read the request body: {e}"))))
        }
    }
}

/// Read and drop a body the request will not use (up to `limit` bytes, for at most 5 s).
pub async fn discard_body(body: Incoming, limit: usize) {
    let drain = Limited::new(body, limit).collect();
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}

/// The client's response for a function answer, or a JSON 500 when the function failed.
pub fn function_reply(outcome: &Outcome) -> Reply {
    match outcome {
        Outcome::Answered(guest) => {
            let mut r = Response::new(Full::new(guest.body.clone()));
            *r.status_mut() = guest.parts.status;
            for (name, value) in &guest.parts.headers {
                if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                    r.headers_mut().append(name, value.clone());
                }
            }
            r
        }
        Outcome::Failed(kind, message) => json_error(&match kind {
            Failure::Trap => ApiError::new(ErrorCode::FunctionFailed, format!("the function failed: {message}")),
            Failure::Timeout => ApiError::new(
                ErrorCode::FunctionTimeout,
                format!("the function ran past its deadline and was stopped: {message}"),
            ),
            Failure::OutOfFuel => ApiError::new(
                ErrorCode::FuelExhausted,
                format!("the function burnt its whole fuel budget and was stopped: {message}"),
            ),
            Failure::OutOfMemory => ApiError::new(ErrorCode::MemoryExhausted, message.clone()),
        }),
    }
}

/// `GET /healthz`: answered by the function, open to all, neither billed nor recorded.
async fn unbilled(app: &App, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    if let Some(refused) = declared_too_large(&parts, app.max_body_bytes) {
        return refused;
    }
    let body = match read_body(body, app.max_body_bytes).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let _slot = match app.slots.acquire().await {
        Ok(slot) => slot,
        Err(refusal) => {
            let mut r = json_error(&ApiError::new(ErrorCode::Overloaded, "every instance is busy: retry later"));
            set_header(&mut r, "retry-after", refusal.retry_after_secs().to_string());
            return r;
        }
    };
    let Some(invoker) = app.routes.find(parts.uri.path()) else { return no_route(parts.uri.path()) };
    let invocation = invoker.invoke(Request::from_parts(parts, Full::new(body))).await;
    function_reply(&invocation.outcome)
}
