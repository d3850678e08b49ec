//! The HTTP front: accept connections (hyper), route each request, shut down gracefully.
//!
//! Which handler answers a request is the route table's ([`crate::routes`]): `GET /healthz`
//! (open, unbilled), `GET /metrics` (Prometheus), the host's API ([`crate::api`]), the demo
//! page and `GET /openapi.json` ([`crate::web`]); everything else goes to the function through
//! [`crate::billing`] (authenticated, admitted, metered, recorded). Every request ends with
//! one audit line and its metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use yolo_core::{ApiError, ErrorCode};

use crate::app::App;
use crate::audit::RequestFacts;
use crate::front::{
    Admission, ConnectionGate, RESERVE_HEADER_TIMEOUT, RequestBody, answer_unread, check_head, read_body,
};
use crate::reply::{Reply, answer_of, json_error, no_route, reply_of, set_header};
use crate::routes::{Handler, handler};

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting and let
/// in-flight requests finish (up to `drain` long).
///
/// At most `http.max_connections` connections are served in full; up to
/// [`crate::front::RESERVED_CONNECTIONS`] more are accepted to answer `/healthz` (anything
/// else: `503 overloaded`), one request each; beyond those, connections wait in the listen
/// backlog until one closes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let gate = ConnectionGate::new(app.http.max_connections);
    let limits = app.http;
    let mut normal = http1::Builder::new();
    normal
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_header_size(limits.hard_header_bytes())
        .max_buf_size(limits.hard_header_bytes().max(8192))
        .max_headers(crate::front::hard_max_headers(limits.max_headers));
    let mut reserve = normal.clone();
    reserve.keep_alive(false).header_read_timeout(RESERVE_HEADER_TIMEOUT.min(limits.header_read_timeout()));
    tokio::pin!(shutdown);
    loop {
        let admission = tokio::select! {
            admission = gate.admit() => admission,
            () = &mut shutdown => break,
        };
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
        let admission = gate.upgrade(admission);
        let over_cap = matches!(admission, Admission::Reserve(_));
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(route(app, req, peer, over_cap).await) }
        });
        let builder = if over_cap { &reserve } else { &normal };
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(admission);
        });
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "gave up waiting for connections to close"),
    }
    Ok(())
}

/// Answer one request as a connection within the cap would: the whole request path, from the
/// front's header checks to the audit line, without a socket. What the accept loop calls for
/// every request, and the seam through which tests drive the host in-process.
pub async fn handle(app: Arc<App>, req: Request<impl RequestBody>, peer: SocketAddr) -> Reply {
    route(app, req, peer, false).await
}

async fn route(app: Arc<App>, req: Request<impl RequestBody>, peer: SocketAddr, over_cap: bool) -> Reply {
    let started = std::time::Instant::now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let mut reply = if let Some(e) = check_head(&parts, &app.http) {
        refusal(answer_unread(json_error(&e), &parts, body, &app.http), "headers_too_large")
    } else {
        let req = Request::from_parts(parts, body);
        match handler(&method, &path) {
            Handler::Healthz => unbilled(&app, req).await,
            Handler::Metrics => metrics(&app),
            _ if over_cap => too_many_connections(&app, req),
            Handler::Asset => crate::web::handle(&method, &path),
            Handler::Api => crate::api::handle(&app, req).await,
            Handler::Function => crate::billing::handle(app.clone(), req, peer).await,
        }
    };
    let facts = reply.extensions_mut().remove::<RequestFacts>().unwrap_or_default();
    observe(&app, &path, reply.status().as_u16(), &facts);
    app.audit.record(peer, method.as_str(), &path, reply.status().as_u16(), &facts, started.elapsed());
    reply
}

/// Mark a reply as a refusal before any tenant is known, for the audit log and metrics.
fn refusal(mut reply: Reply, reason: &'static str) -> Reply {
    reply.extensions_mut().insert(RequestFacts { refused: Some(reason), ..RequestFacts::default() });
    reply
}

/// A connection over `max_connections` asked for something other than `/healthz`.
fn too_many_connections(app: &App, req: Request<impl RequestBody>) -> Reply {
    let (parts, body) = req.into_parts();
    let mut r = json_error(&ApiError::new(
        ErrorCode::Overloaded,
        format!(
            "the host has {} connections open, its limit: only /healthz is answered over it; retry later",
            app.http.max_connections
        ),
    ));
    set_header(&mut r, "retry-after", "1");
    let mut r = answer_unread(r, &parts, body, &app.http);
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    refusal(r, "too_many_connections")
}

/// Count a finished request in the metrics.
fn observe(app: &App, path: &str, status: u16, facts: &RequestFacts) {
    let m = &app.metrics;
    let route = crate::routes::label(path);
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

/// `GET /healthz`: answered by the function, open to all, neither billed nor recorded.
async fn unbilled(app: &App, req: Request<impl RequestBody>) -> Reply {
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts, body, app.max_body_bytes, &app.http).await {
        Ok(b) => b,
        Err((refused, reason)) => return refusal(refused, reason),
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
    reply_of(&answer_of(invocation.outcome))
}
