//! The HTTP front's own limits, applied before any tenant, slot or instance is involved:
//! the header section's size and field count (431), deadlines on reading a body (408), the
//! answer-then-drain of bodies that will not be used (so a client still sending sees the
//! answer instead of a reset), and the cap on open connections.
//!
//! Settings: `[http]` in `yolo-edge.toml`, each overridden by the `serve` flag of the same
//! name.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, header, request::Parts};
use http_body_util::BodyExt as _;
use hyper::body::Body;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use yolo_core::{ApiError, ErrorCode};

use crate::reply::{Reply, json_error};

/// A request body as the front reads it: hyper's `Incoming` on a connection, or any other
/// body of bytes when a request is handed to [`crate::server::handle`] in-process (tests).
pub trait RequestBody: Body<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static {}

impl<B> RequestBody for B where B: Body<Data = Bytes, Error: std::fmt::Display> + Send + Unpin + 'static {}

/// Connections accepted beyond `max_connections`: they may only ask `GET /healthz` (and
/// `/metrics`); anything else gets `503 overloaded`. They must send their request within
/// [`RESERVE_HEADER_TIMEOUT`] and are closed after one answer.
pub const RESERVED_CONNECTIONS: usize = 16;
/// How long a connection over the cap may take to send its request head.
pub const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Header sections larger than this (or than `max_header_bytes`, if larger) are refused by
/// hyper itself while reading them: a bare `431` without a body, then the connection closes.
/// Up to it, the host reads the head and answers `431 headers_too_large` in JSON.
pub const HARD_HEADER_BYTES: usize = 256 << 10;
/// Likewise for the number of header fields: above `max(4 × max_headers, 400)` hyper answers
/// a bare `431`.
pub fn hard_max_headers(max_headers: usize) -> usize {
    max_headers.saturating_mul(4).max(400)
}

/// `[http]`: limits of the HTTP front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Largest request head (request line and header fields), bytes; then `431`.
    pub max_header_bytes: usize,
    /// Most header fields in one request; then `431`.
    pub max_headers: usize,
    /// Longest time to receive a request head, ms (also how long an idle keep-alive
    /// connection stays open); then the connection is closed without an answer.
    pub header_read_timeout_ms: u64,
    /// Longest wait for the next piece of a request body, ms; then `408`.
    pub body_read_timeout_ms: u64,
    /// Longest time to receive a whole request body, ms; then `408`.
    pub body_timeout_ms: u64,
    /// Open connections at once; beyond it (plus a reserve of 16 for `/healthz`) new
    /// connections wait in the listen backlog.
    pub max_connections: usize,
    /// A body that will not be used (refused request) is read and dropped up to this many
    /// bytes after the answer, so the client sees the answer; then the connection is closed.
    pub drain_max_bytes: u64,
    /// ...and for at most this long, ms.
    pub drain_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 << 10,
            max_headers: 100,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            max_connections: 512,
            drain_max_bytes: 64 << 20,
            drain_timeout_ms: 10_000,
        }
    }
}

impl HttpLimits {
    /// [`Self::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    /// The buffer hyper may fill with one request head.
    pub fn hard_header_bytes(&self) -> usize {
        self.max_header_bytes.max(HARD_HEADER_BYTES)
    }
}

/// The size of a request head as sent: request line and every `name: value` line.
pub fn head_bytes(parts: &Parts) -> usize {
    let line = parts.method.as_str().len() + parts.uri.to_string().len() + " HTTP/1.1\r\n".len() + 1;
    line + parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>() + 2
}

/// `431 headers_too_large` when the head is over the configured size or field count.
pub fn check_head(parts: &Parts, limits: &HttpLimits) -> Option<ApiError> {
    let fields = parts.headers.len();
    if fields > limits.max_headers {
        return Some(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("the request has {fields} header fields, more than the limit of {}", limits.max_headers),
        ));
    }
    let bytes = head_bytes(parts);
    (bytes > limits.max_header_bytes).then(|| {
        ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("the request head is {bytes} bytes, larger than the limit of {} bytes", limits.max_header_bytes),
        )
    })
}

fn close(reply: &mut Reply) {
    reply.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Answer `reply` to a request whose body will not be read. The connection closes after
/// the answer; meanwhile what the client still sends is read and dropped (up to
/// `drain_max_bytes`, for `drain_timeout_ms`), so a client that writes its whole body before
/// reading (curl, Python) sees the answer instead of a reset connection. A client that asked
/// `Expect: 100-continue` is not drained: it has sent nothing and will send nothing.
pub fn answer_unread(mut reply: Reply, parts: &Parts, body: impl RequestBody, limits: &HttpLimits) -> Reply {
    if body.is_end_stream() {
        return reply;
    }
    close(&mut reply);
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !expects_continue {
        drain(body, limits);
    }
    reply
}

/// Read and drop the rest of `body` in the background, within the drain limits.
fn drain(mut body: impl RequestBody, limits: &HttpLimits) {
    let max = limits.drain_max_bytes;
    let deadline = Instant::now() + Duration::from_millis(limits.drain_timeout_ms);
    let idle = Duration::from_millis(limits.body_read_timeout_ms.max(1));
    tokio::spawn(async move {
        let mut read = 0u64;
        while read <= max {
            let until = deadline.min(Instant::now() + idle);
            match tokio::time::timeout_at(until, body.frame()).await {
                Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
        tracing::debug!(bytes = read, "drained an unused request body");
    });
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("the request body is larger than the limit of {limit} bytes"))
}

/// The declared `Content-Length` is over `limit`: `413`, answered before reading anything.
pub fn declared_too_large(parts: &Parts, limit: usize) -> Option<ApiError> {
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    declared.is_some_and(|n| n > limit as u64).then(|| too_large(limit))
}

/// Why a body was not read: the answer, and the reason for the audit log and metrics.
pub type Unread = (Reply, &'static str);

/// Read a whole request body of at most `limit` bytes (chunked bodies included): `413`
/// (answered at once, the rest drained) past the limit, `408 request_timeout` (the
/// connection then closes) when the client stalls longer than `body_read_timeout_ms` or
/// the body takes longer than `body_timeout_ms`. Call it before taking anything a slow
/// client must not hold (an instance slot, a tenant's place in flight).
pub async fn read_body(
    parts: &Parts,
    body: impl RequestBody,
    limit: usize,
    limits: &HttpLimits,
) -> Result<Bytes, Unread> {
    if let Some(e) = declared_too_large(parts, limit) {
        return Err((answer_unread(json_error(&e), parts, body, limits), "payload_too_large"));
    }
    let mut body = body;
    let idle = Duration::from_millis(limits.body_read_timeout_ms.max(1));
    let total = Duration::from_millis(limits.body_timeout_ms.max(1));
    let deadline = Instant::now() + total;
    let hint = body.size_hint().exact().map_or(0, |n| n.min(limit as u64) as usize);
    let mut buf = BytesMut::with_capacity(hint);
    loop {
        let now = Instant::now();
        let whole = deadline <= now + idle;
        let frame = match tokio::time::timeout_at(deadline.min(now + idle), body.frame()).await {
            Ok(frame) => frame,
            Err(_) => {
                let message = if whole {
                    format!("the request body took longer than {} ms to arrive", total.as_millis())
                } else {
                    format!("the client sent no part of the request body for {} ms", idle.as_millis())
                };
                let mut reply = json_error(&ApiError::new(ErrorCode::RequestTimeout, message));
                close(&mut reply);
                return Err((reply, "request_timeout"));
            }
        };
        match frame {
            None => return Ok(buf.freeze()),
            Some(Err(e)) => {
                let e = ApiError::new(ErrorCode::InvalidRequest, format!("could not read the request body: {e}"));
                let mut reply = json_error(&e);
                close(&mut reply);
                return Err((reply, "unreadable_body"));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        return Err((
                            answer_unread(json_error(&too_large(limit)), parts, body, limits),
                            "payload_too_large",
                        ));
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Which pool a connection's permit came from.
pub enum Admission {
    /// Within `max_connections`: served in full.
    Normal(#[allow(dead_code)] OwnedSemaphorePermit),
    /// Over the cap, in the reserve: `/healthz` only, one request.
    Reserve(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// The cap on open connections, with a small reserve so probes still get through.
pub struct ConnectionGate {
    normal: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

impl ConnectionGate {
    /// `max` connections (at least 1) plus [`RESERVED_CONNECTIONS`].
    pub fn new(max: usize) -> Self {
        Self { normal: Arc::new(Semaphore::new(max.max(1))), reserve: Arc::new(Semaphore::new(RESERVED_CONNECTIONS)) }
    }

    /// A permit for the next connection, waiting (before accepting it) while both pools are
    /// full: the listen backlog holds the waiting ones, so open sockets stay bounded.
    pub async fn admit(&self) -> Admission {
        if let Ok(p) = self.normal.clone().try_acquire_owned() {
            return Admission::Normal(p);
        }
        if let Ok(p) = self.reserve.clone().try_acquire_owned() {
            return Admission::Reserve(p);
        }
        tokio::select! {
            Ok(p) = self.normal.clone().acquire_owned() => Admission::Normal(p),
            Ok(p) = self.reserve.clone().acquire_owned() => Admission::Reserve(p),
        }
    }

    /// Move a reserve admission to the normal pool when a place freed up meanwhile.
    pub fn upgrade(&self, admission: Admission) -> Admission {
        match admission {
            Admission::Reserve(p) => match self.normal.clone().try_acquire_owned() {
                Ok(n) => {
                    drop(p);
                    Admission::Normal(n)
                }
                Err(_) => Admission::Reserve(p),
            },
            normal => normal,
        }
    }

    /// Connections open now (normal and reserve).
    pub fn open(&self, max: usize) -> usize {
        (max.max(1) - self.normal.available_permits()) + (RESERVED_CONNECTIONS - self.reserve.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, String)]) -> Parts {
        let mut b = http::Request::builder().method("POST").uri("/detect?conf=0.3");
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn heads_over_the_limits_are_refused() {
        let limits = HttpLimits::default();
        assert!(check_head(&parts(&[("host", "x".into())]), &limits).is_none());
        let big = parts(&[("x-big", "a".repeat(200_000))]);
        let e = check_head(&big, &limits).unwrap();
        assert_eq!((e.status(), e.code.as_str()), (431, "headers_too_large"));
        let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-h{i}"), "1".to_owned())).collect();
        let many: Vec<(&str, String)> = many.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        assert!(check_head(&parts(&many), &limits).unwrap().message.contains("101 header fields"));
        assert!(check_head(&parts(&many[..100]), &limits).is_none());
        let exact = parts(&[("x-a", "b".into())]);
        let size = head_bytes(&exact);
        assert_eq!(size, "POST /detect?conf=0.3 HTTP/1.1\r\nx-a: b\r\n\r\n".len());
        assert!(check_head(&exact, &HttpLimits { max_header_bytes: size, ..limits }).is_none());
        assert!(check_head(&exact, &HttpLimits { max_header_bytes: size - 1, ..limits }).is_some());
    }

    #[tokio::test]
    async fn the_gate_fills_the_cap_then_the_reserve_then_waits() {
        let gate = ConnectionGate::new(2);
        let a = gate.admit().await;
        let _b = gate.admit().await;
        assert!(matches!(a, Admission::Normal(_)));
        let reserve: Vec<Admission> = admit_n(&gate, RESERVED_CONNECTIONS).await;
        assert!(reserve.iter().all(|r| matches!(r, Admission::Reserve(_))));
        assert_eq!(gate.open(2), 2 + RESERVED_CONNECTIONS);
        let waiting = tokio::time::timeout(Duration::from_millis(50), gate.admit()).await;
        assert!(waiting.is_err(), "full: the next connection waits");
        drop(a);
        assert!(matches!(gate.upgrade(reserve.into_iter().next().unwrap()), Admission::Normal(_)));
    }

    async fn admit_n(gate: &ConnectionGate, n: usize) -> Vec<Admission> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(gate.admit().await);
        }
        v
    }
}
