//! Warm latency with one client: the bare pipeline (every core, as the host's lone request),
//! yolo-edge and Python in-process request by request (section 1); the Python server and stock
//! `wasmtime serve` alone; and repeats of one request answered from the result cache.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use yolo_edge_tests::{Host, photo, photo_bytes};

use crate::common::{IMAGES, Image, Settings, header_median, latencies, ms, step, target};
use crate::servers::{StockServer, model_dir};
use crate::stats::{Summary, summarize};
use crate::{bare, http, python};

/// One client's warm latency of three pipelines on one image, request by request.
pub struct Latencies {
    /// The bare pipeline: total and inference ms.
    pub bare: Vec<f64>,
    /// The bare pipeline's inference, ms.
    pub bare_nn: Vec<f64>,
    /// The server's answers.
    pub answers: Vec<http::Answer>,
    /// The Python in-process pipeline, ms (absent when not asked for).
    pub python: Vec<f64>,
}

/// `reps` alternations of one bare pipeline run, one request to a server and (with
/// `python`) one Python in-process run, after three unmeasured ones.
pub fn interleaved(
    reps: usize,
    bare: &bare::Bare,
    image: &Image,
    agent: &ureq::Agent,
    server: &http::Target,
    mut python: Option<&mut python::Worker>,
) -> anyhow::Result<Latencies> {
    let bytes = photo_bytes(image.name);
    let path = photo(image.name);
    let mut l = Latencies { bare: vec![], bare_nn: vec![], answers: vec![], python: vec![] };
    // A pause after each side: onnxruntime's workers spin for a while after a run (Python's
    // default session options: ~40 ms measured here with onnxruntime 1.32), which would slow
    // whichever side runs next.
    let settle = || std::thread::sleep(Duration::from_millis(60));
    for rep in 0..reps + 3 {
        let started = Instant::now();
        let run = bare.run(&bytes)?;
        let total = started.elapsed().as_secs_f64() * 1000.0;
        settle();
        let answer = http::send(agent, server)?;
        settle();
        let py = python.as_deref_mut().map(|p| p.run(&path)).transpose()?;
        settle();
        if rep >= 3 {
            l.bare.push(total);
            l.bare_nn.push(run.inference.as_secs_f64() * 1000.0);
            l.answers.push(answer);
            l.python.extend(py);
        }
    }
    Ok(l)
}

/// Section 1 on one image.
pub struct Warm {
    /// The bare pipeline on every core.
    pub bare: Summary,
    /// The bare pipeline's inference.
    pub bare_nn: Summary,
    /// yolo-edge, client-observed.
    pub host: Summary,
    /// What the host reports of its side.
    pub inside: Inside,
    /// Python in-process.
    pub python: Summary,
    /// yolo-edge's first answer (the OpenVINO comparison pairs its detections).
    pub first_body: String,
}

/// The host's own medians of one image's requests (its `x-*` headers), as `BENCHMARKS.json`
/// writes them.
#[derive(Serialize)]
pub struct Inside {
    /// Invocation wall time, µs.
    pub wall_us: f64,
    /// Inference, µs.
    pub nn_us: f64,
    /// Instantiation, µs.
    pub instantiate_us: f64,
    /// Fuel consumed.
    pub fuel: f64,
    /// Peak guest memory, bytes.
    pub memory_bytes: f64,
    /// Every round's sample, in order, so that a p99 can be traced to its round and
    /// compared with the other sides' samples of that round.
    pub rounds: Rounds,
}

/// Every round's samples of one image, ms.
#[derive(Serialize)]
pub struct Rounds {
    /// yolo-edge, client-observed.
    pub host_ms: Vec<f64>,
    /// yolo-edge's invocation wall time.
    pub host_wall_ms: Vec<f64>,
    /// The bare pipeline.
    pub bare_ms: Vec<f64>,
    /// Python in-process.
    pub python_ms: Vec<f64>,
}

/// Section 1, every image in [`IMAGES`] order. Returns the bare pipeline it loaded too: the
/// throughput runs it again.
pub fn warm_latency(
    cfg: &Settings,
    cores: usize,
    host: &Host,
    agent: &ureq::Agent,
    py_worker: &mut python::Worker,
) -> anyhow::Result<(Vec<Warm>, bare::Bare)> {
    step("warm latency: bare native pipeline, yolo-edge and Python in-process, interleaved");
    let bare = bare::Bare::load(&model_dir(), cores, cores)?;
    let mut warm = Vec::new();
    for image in &IMAGES {
        let t = target(host.url("/detect"), Some(&host.key), image);
        let l = interleaved(cfg.reps, &bare, image, agent, &t, Some(&mut *py_worker))?;
        anyhow::ensure!(l.answers.iter().all(|a| a.status == 200), "the host failed: {}", l.answers[0].body);
        let got: Value = serde_json::from_str(&l.answers[0].body)?;
        if got["detections"] != serde_json::to_value(bare.run(&photo_bytes(image.name))?.detections)? {
            eprintln!("bench: warning: the host's and the bare pipeline's answers differ on {}", image.name);
        }
        let med = |h: &str| header_median(&l.answers, h);
        let inside = Inside {
            wall_us: med("x-wall-us"),
            nn_us: med("x-nn-us"),
            instantiate_us: med("x-instantiate-us"),
            fuel: med("x-fuel"),
            memory_bytes: med("x-memory-bytes"),
            rounds: Rounds {
                host_ms: latencies(&l.answers),
                host_wall_ms: l.answers.iter().map(|a| a.number("x-wall-us").unwrap_or(f64::NAN) / 1000.0).collect(),
                bare_ms: l.bare.clone(),
                python_ms: l.python.clone(),
            },
        };
        warm.push(Warm {
            bare: summarize(&l.bare),
            bare_nn: summarize(&l.bare_nn),
            host: ms(&l.answers),
            inside,
            python: summarize(&l.python),
            first_body: l.answers[0].body.clone(),
        });
    }
    Ok((warm, bare))
}

/// One client of the other servers: the Python server and stock `wasmtime serve`.
pub struct OtherServers {
    /// The Python `ThreadingHTTPServer`.
    pub python_http: Summary,
    /// Stock `wasmtime serve`, when it was built.
    pub stock: Option<Summary>,
}

/// Measure [`OtherServers`], and stop each server once measured.
pub fn other_servers(
    cfg: &Settings,
    py_server: python::Server,
    stock: Option<StockServer>,
) -> anyhow::Result<OtherServers> {
    step("Python server and stock wasmtime serve: one client");
    let py_t = target(py_server.url.clone(), None, &IMAGES[0]);
    let python_http = ms(&http::sequential(&py_t, 2, cfg.reps)?);
    drop(py_server);
    let stock_lat = match &stock {
        Some(s) => {
            let t = target(s.url.clone(), None, &IMAGES[0]);
            let answers = http::sequential(&t, 1, cfg.reps.min(15))?;
            anyhow::ensure!(answers.iter().all(|a| a.status == 200), "stock wasmtime failed: {}", answers[0].body);
            Some(ms(&answers))
        }
        None => None,
    };
    drop(stock);
    Ok(OtherServers { python_http, stock: stock_lat })
}

/// Repeats of one request, answered from the result cache.
pub struct CacheHits {
    /// One client's latency.
    pub latency: Summary,
    /// Tokens billed per hit (median).
    pub tokens: f64,
}

/// Measure [`CacheHits`] on a host of its own with the result cache on.
pub fn cache_hits(cfg: &Settings) -> anyhow::Result<CacheHits> {
    step("result cache: repeats of one request");
    let cached_host = Host::start(&["--tenant-rps", "0", "--tenant-max-concurrent", "0"])?;
    let t = target(cached_host.url("/detect"), Some(&cached_host.key), &IMAGES[0]);
    let hits = http::sequential(&t, 1, cfg.reps)?;
    anyhow::ensure!(hits.iter().all(|a| a.status == 200), "cached answers failed: {}", hits[0].body);
    Ok(CacheHits { latency: ms(&hits), tokens: header_median(&hits, "x-tokens") })
}
