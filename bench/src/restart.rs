//! Starts and first requests: yolo-edge's cold start (process start → first correct answer),
//! and a restart of the Spin-path component with its compiled component cached.

use std::path::Path;
use std::time::Instant;

use yolo_edge_tests::Host;

use crate::common::{IMAGES, step, target};
use crate::http;
use crate::servers::start_composed;
use crate::stats::{Summary, summarize};

/// Three cold starts of yolo-edge, each from process start to its first correct answer, ms.
pub fn cold_start() -> anyhow::Result<Summary> {
    step("cold start");
    let mut cold = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let h = Host::start(&["--no-result-cache"])?;
        let t = target(h.url("/detect"), Some(&h.key), &IMAGES[1]);
        let first = http::send(&ureq::Agent::new_with_defaults(), &t)?;
        anyhow::ensure!(first.status == 200, "cold start answer {}", first.status);
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(summarize(&cold))
}

/// A restart of the Spin path.
pub struct Restart {
    /// Process start → listening, ms.
    pub listen_ms: f64,
    /// The first request after that start, alone, ms.
    pub first_ms: f64,
}

/// A restart of `composed` (compiled component cached by an earlier start): time to listen,
/// then the first request alone.
pub fn composed(composed: &Path) -> anyhow::Result<Restart> {
    let started = Instant::now();
    let wasm_host = start_composed(composed)?;
    let listen_ms = started.elapsed().as_secs_f64() * 1000.0;
    let t = target(wasm_host.url("/detect"), Some(&wasm_host.key), &IMAGES[1]);
    let sent = Instant::now();
    let first = http::send(&ureq::Agent::new_with_defaults(), &t)?;
    anyhow::ensure!(first.status == 200, "first answer of the composed component: {}", first.status);
    let first_ms = sent.elapsed().as_secs_f64() * 1000.0;
    drop(wasm_host);
    Ok(Restart { listen_ms, first_ms })
}
