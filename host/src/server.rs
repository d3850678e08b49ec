//! The HTTP front: accept connections (hyper), enforce the body limit before any instance
//! exists, hand the request to the [`Invoker`], and answer with the metering headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use uuid::Uuid;
use yolo_core::{ApiError, ErrorCode};

use crate::invoke::{Invocation, Invoker, Outcome};
use crate::metering::headers;

/// Default request body limit: 20 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 << 20;

/// Everything a request needs, shared by all connections.
pub struct App {
    /// Runs the function.
    pub invoker: Invoker,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
}

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
            async move { Ok::<_, Infallible>(handle(&app, req, peer).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
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

fn json_error(e: &ApiError) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(e.to_json())));
    *r.status_mut() = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// Handle one request: refuse what is too large, invoke, answer.
async fn handle(app: &App, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes as u64) {
        return json_error(&too_large(app.max_body_bytes));
    }
    let body = match Limited::new(body, app.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return json_error(&too_large(app.max_body_bytes));
        }
        Err(e) => {
            return json_error(&ApiError::new(
                ErrorCode::InvalidRequest,
                format!("could not read the request body: {e}"),
            ));
        }
    };

    let id = Uuid::now_v7();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let invocation = app
        .invoker
        .invoke(Request::from_parts(parts, Full::new(body)))
        .await;
    let mut response = respond(&invocation);
    let usage = invocation.usage;
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(headers::INVOCATION_ID, id.to_string());
    set(headers::FUEL, usage.fuel.to_string());
    set(headers::WALL_US, usage.wall.as_micros().to_string());
    set(headers::NN_US, usage.inference.as_micros().to_string());
    set(headers::MEMORY_BYTES, usage.peak_memory.to_string());
    set(headers::PIXELS, usage.pixels.to_string());

    let status = response.status().as_u16();
    let failure = match &invocation.outcome {
        Outcome::Failed(msg) => Some(msg.as_str()),
        Outcome::Answered(_) => None,
    };
    tracing::info!(
        target: "yolo_edge::invocation",
        invocation_id = %id,
        %peer,
        %method,
        %path,
        status,
        fuel = usage.fuel,
        wall_us = usage.wall.as_micros() as u64,
        nn_us = usage.inference.as_micros() as u64,
        nn_queued_us = usage.inference_queued.as_micros() as u64,
        peak_memory = usage.peak_memory,
        pixels = usage.pixels,
        failure,
        "invocation"
    );
    response
}

/// The client's response: the function's answer, or a JSON 500 when it failed.
fn respond(invocation: &Invocation) -> Response<Full<Bytes>> {
    match &invocation.outcome {
        Outcome::Answered(guest) => {
            let mut r = Response::new(Full::new(guest.body.clone()));
            *r.status_mut() = guest.parts.status;
            for (name, value) in &guest.parts.headers {
                if name != header::CONTENT_LENGTH
                    && name != header::TRANSFER_ENCODING
                    && name != header::CONNECTION
                {
                    r.headers_mut().append(name, value.clone());
                }
            }
            r
        }
        Outcome::Failed(message) => json_error(&ApiError::new(
            ErrorCode::FunctionFailed,
            format!("the function failed: {message}"),
        )),
    }
}
