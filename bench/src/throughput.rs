//! Throughput with 1, 2, 4 and 8 clients, every contender in alternating rounds (section 2),
//! the host's RSS after it, and the CPU floor under the 8-client targets: one request's
//! single-threaded inference, measured alone.

use std::time::Duration;

use yolo_edge_tests::{Host, photo, photo_bytes};

use crate::common::{IMAGES, ROUNDS, Settings, step, target};
use crate::servers::{StockServer, model_dir};
use crate::stats::{Summary, summarize};
use crate::{bare, http, python};

/// One side of the throughput comparison: requests per second and failures over a duration.
type Contender<'a> = Box<dyn Fn(Duration) -> (f64, usize) + 'a>;

/// The throughput contenders, in table order.
pub const CONTENDERS: [&str; 6] = [
    "yolo-edge",
    "bare pipeline (same thread budget)",
    "Python in-process (N threads)",
    "Python ThreadingHTTPServer",
    "stock `wasmtime serve -S nn`",
    "yolo-edge, OpenVINO backend",
];

/// Throughput of every contender at one client count.
pub struct Row {
    /// Concurrent clients (threads, for the in-process contenders).
    pub clients: usize,
    /// (requests/s, failed) by contender, in [`CONTENDERS`] order (NaN: not measured).
    pub results: Vec<(f64, usize)>,
}

/// Section 2's numbers.
pub struct Throughput {
    /// Each round's measuring time per contender.
    pub window: Duration,
    /// By client count: 1, 2, 4, 8.
    pub rows: Vec<Row>,
    /// The host's RSS after the throughput runs, MiB.
    pub host_rss: f64,
}

/// Section 2 on [`IMAGES`]`[0]`: yolo-edge, the bare pipeline (the host's sessions), Python
/// in-process and behind its server, stock `wasmtime serve` and yolo-edge on OpenVINO.
pub fn throughput(
    cfg: &Settings,
    bare: &bare::Bare,
    host: &Host,
    py_server: &python::Server,
    ov_host: &Host,
    stock: Option<&StockServer>,
) -> Throughput {
    step("throughput with 1, 2, 4 and 8 clients: every contender in alternating rounds");
    let large = target(host.url("/detect"), Some(&host.key), &IMAGES[0]);
    let large_bytes = photo_bytes(IMAGES[0].name);
    let large_path = photo(IMAGES[0].name);
    let py_t = target(py_server.url.clone(), None, &IMAGES[0]);
    let ov_t = target(ov_host.url("/detect"), Some(&ov_host.key), &IMAGES[0]);
    let stock_t = stock.map(|s| target(s.url.clone(), None, &IMAGES[0]));
    let window = (cfg.seconds / ROUNDS).max(Duration::from_secs(3));
    let mut rows = Vec::new();
    for clients in [1usize, 2, 4, 8] {
        let skipped = || -> Contender<'_> { Box::new(|_| (f64::NAN, 0)) };
        let contenders: Vec<Contender<'_>> = vec![
            Box::new(|d| http::throughput(&large, clients, d)),
            Box::new(|d| (bare.throughput(&large_bytes, clients, d), 0)),
            Box::new(|d| python::throughput(&model_dir(), &large_path, clients, d).unwrap_or((0.0, 1))),
            Box::new(|d| http::throughput(&py_t, clients, d)),
            match &stock_t {
                Some(t) => Box::new(move |d| http::throughput(t, clients, d)),
                None => skipped(),
            },
            // OpenVINO at the heaviest load only (its one-client latency is measured later).
            if clients == 8 { Box::new(|d| http::throughput(&ov_t, clients, d)) } else { skipped() },
        ];
        // Unmeasured first, so that no round pays a server's first requests.
        for warm_up in &contenders {
            warm_up(Duration::from_secs(1));
        }
        let mut sums = vec![(0.0, 0usize); contenders.len()];
        for _ in 0..ROUNDS {
            for (sum, run) in sums.iter_mut().zip(&contenders) {
                let (rps, bad) = run(window);
                *sum = (sum.0 + rps / f64::from(ROUNDS), sum.1 + bad);
            }
        }
        eprintln!("bench: {clients} clients: {sums:?}");
        rows.push(Row { clients, results: sums });
    }
    Throughput { window, rows, host_rss: rss_mib(host.pid()) }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one request's inference costs in CPU under load (one thread, as each inference
/// runs at 8 clients), measured alone: the floor under the 8-client targets.
pub fn cpu_floor(cfg: &Settings) -> anyhow::Result<Summary> {
    step("single-threaded inference alone (each inference's CPU under load)");
    let large_bytes = photo_bytes(IMAGES[0].name);
    let single = bare::Bare::load(&model_dir(), 1, 1)?;
    let single_nn: Vec<f64> = (0..cfg.reps)
        .map(|_| single.run(&large_bytes).map(|r| r.inference.as_secs_f64() * 1000.0))
        .collect::<anyhow::Result<_>>()?;
    Ok(summarize(&single_nn))
}
