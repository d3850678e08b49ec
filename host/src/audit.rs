//! The audit log: one JSON line per request (time, source IP, tenant, invocation id,
//! status, detection count and classes, tokens), to a file, stdout, or nowhere.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use serde::Serialize;

/// What the request path learned about a request, carried to the audit log and the
/// metrics in the response's extensions.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// The authenticated tenant.
    pub tenant: Option<String>,
    /// The invocation id, when something was invoked (or replayed).
    pub invocation_id: Option<String>,
    /// Tokens charged.
    pub tokens: Option<u64>,
    /// Detections in a 200 answer of `/detect`.
    pub detections: Option<u64>,
    /// Their distinct class names.
    pub classes: Vec<String>,
    /// Why it was refused before execution (`unauthorized`, `rate_limited`, ...).
    pub refused: Option<&'static str>,
    /// Guest fuel (executed invocations).
    pub fuel: Option<u64>,
    /// Wall time, seconds (executed invocations).
    pub wall_seconds: Option<f64>,
    /// Inference time, seconds (executed invocations).
    pub inference_seconds: Option<f64>,
    /// Served from the cache.
    pub cache_hit: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    ip: String,
    method: &'a str,
    path: &'a str,
    status: u16,
    tenant: Option<&'a str>,
    invocation_id: Option<&'a str>,
    detections: Option<u64>,
    classes: &'a [String],
    tokens: Option<u64>,
    refused: Option<&'a str>,
    duration_us: u64,
}

/// Where audit lines go.
pub struct AuditLog {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
}

impl AuditLog {
    /// `"stdout"`, `"off"`, or a file path (created, appended to).
    pub fn open(target: &str) -> anyhow::Result<Self> {
        let sink: Option<Box<dyn Write + Send>> = match target {
            "off" | "" => None,
            "stdout" => Some(Box::new(std::io::stdout())),
            path => {
                let path = Path::new(path);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open the audit log {}", path.display()))?;
                Some(Box::new(file))
            }
        };
        Ok(Self { sink: sink.map(Mutex::new) })
    }

    /// Write one line.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        peer: SocketAddr,
        method: &str,
        path: &str,
        status: u16,
        facts: &RequestFacts,
        duration: std::time::Duration,
    ) {
        let Some(sink) = &self.sink else { return };
        let line = Line {
            time: yolo_edge_ledger::rfc3339(yolo_edge_ledger::now_us()),
            ip: peer.ip().to_string(),
            method,
            path,
            status,
            tenant: facts.tenant.as_deref(),
            invocation_id: facts.invocation_id.as_deref(),
            detections: facts.detections,
            classes: &facts.classes,
            tokens: facts.tokens,
            refused: facts.refused,
            duration_us: duration.as_micros() as u64,
        };
        let Ok(mut text) = serde_json::to_string(&line) else { return };
        text.push('\n');
        let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = sink.write_all(text.as_bytes()).and_then(|()| sink.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
