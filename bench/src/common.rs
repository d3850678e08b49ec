//! What every measured part shares: the images, the run's settings, the machine, and the small
//! helpers that turn answers into numbers. Measures nothing itself.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use yolo_edge_tests::{photo_bytes, repo};

use crate::http;
use crate::stats::{Summary, summarize};

/// A benchmark input.
pub struct Image {
    /// Its file in `tests/data/`.
    pub name: &'static str,
    /// Its content type.
    pub content_type: &'static str,
    /// What it is, for the tables.
    pub what: &'static str,
}

/// The images of the warm-latency, metering and Spin-path tables; the first is also the
/// throughput's.
pub const IMAGES: [Image; 2] = [
    Image { name: "large.jpg", content_type: "image/jpeg", what: "1280x720 JPEG" },
    Image { name: "coffee.png", content_type: "image/png", what: "600x400 PNG" },
];

/// Alternating rounds of the 8-client throughput comparison.
pub const ROUNDS: u32 = 3;

/// How long and how often each part measures, and where the report goes.
pub struct Settings {
    /// Requests (or runs) per measured side.
    pub reps: usize,
    /// Duration of each throughput row, all rounds together.
    pub seconds: Duration,
    /// Where `BENCHMARKS.md` and `BENCHMARKS.json` are written.
    pub out: PathBuf,
}

/// The settings of this run: `--quick` for fewer requests and shorter throughput rows.
pub fn settings() -> Settings {
    let quick = std::env::args().any(|a| a == "--quick");
    Settings {
        reps: if quick { 10 } else { 40 },
        seconds: Duration::from_secs(if quick { 4 } else { 10 }),
        out: repo(),
    }
}

/// The machine this run measures on.
#[derive(serde::Serialize)]
pub struct Machine {
    /// Its cores (available parallelism).
    pub cores: usize,
    /// Its CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
}

impl Machine {
    /// This machine.
    pub fn probe() -> Self {
        Self { cores: std::thread::available_parallelism().map_or(1, |n| n.get()), cpu: cpu_model() }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The median of `values` (0 when there are none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    summarize(&values.into_iter().collect::<Vec<_>>()).p50
}

/// `a ÷ b`, NaN when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// Say what the benchmark measures now.
pub fn step(what: &str) {
    eprintln!("bench: {what}");
}

/// A request of `image` to `url`, with `key` as its bearer token.
pub fn target(url: String, key: Option<&str>, image: &Image) -> http::Target {
    http::Target {
        url,
        headers: key.map(|k| vec![("authorization".to_owned(), format!("Bearer {k}"))]).unwrap_or_default(),
        body: photo_bytes(image.name),
        content_type: image.content_type.to_owned(),
    }
}

/// A latency summary as `BENCHMARKS.json` writes it.
pub fn latency_json(s: &Summary) -> Value {
    json!({"n": s.n, "p50_ms": s.p50, "p99_ms": s.p99, "mean_ms": s.mean})
}

/// Each answer's client-observed latency, ms, in order.
pub fn latencies(answers: &[http::Answer]) -> Vec<f64> {
    answers.iter().map(|a| a.ms).collect()
}

/// The summary of the answers' client-observed latencies.
pub fn ms(answers: &[http::Answer]) -> Summary {
    summarize(&latencies(answers))
}

/// An answer's guest time, ms: the invocation's wall time less its inference, as the host
/// reports them (`x-wall-us`, `x-nn-us`).
pub fn guest_time_ms(a: &http::Answer) -> f64 {
    (a.number("x-wall-us").unwrap_or(0.0) - a.number("x-nn-us").unwrap_or(0.0)) / 1000.0
}

/// The median of a numeric header over the answers (0 when none has it).
pub fn header_median(answers: &[http::Answer], header: &str) -> f64 {
    median(answers.iter().filter_map(|a| a.number(header)))
}
