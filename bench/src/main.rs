//! `cargo xtask bench`: one run, same machine, same images, same model:
//!
//! 1. the bare native pipeline (decode + letterbox + ONNX Runtime + NMS, in-process, with
//!    the host's adaptive threading: every core for a lone run, one thread per run under load);
//! 2. Python (Pillow + `onnxruntime` with default threads): in-process and behind a
//!    `ThreadingHTTPServer`;
//! 3. stock `wasmtime serve -S nn` (Wasmtime 48.0.8, ONNX backend) serving the same component;
//! 4. our host: warm latency, throughput with 1/2/4/8 clients, cold start, instantiation
//!    time, RSS, and the cost of fuel metering (on vs off);
//! 5. the shared ledger: one host on SQLite against one, then two hosts on one PostgreSQL.
//!
//! Every comparison behind the targets interleaves its sides (bare pipeline, host and Python
//! request by request; the throughputs in alternating rounds; fuel on and off request by
//! request, judged by the median of each round's ratio), because the speed of these shared
//! machines drifts within minutes.
//!
//! Writes `BENCHMARKS.md` (tables, ratios against the baselines of the same run) and
//! `BENCHMARKS.json` (the raw numbers). Not a test: nothing here asserts a timing.
#![deny(missing_docs)]

mod bare;
mod http;
mod ledger;
mod python;
mod stats;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledger::shared_ledger;
use serde_json::{Value, json};
use stats::{Summary, paired_overhead, summarize};
use yolo_edge_tests::{Host, pair_detections, photo, photo_bytes, repo};

/// A benchmark input.
struct Image {
    name: &'static str,
    content_type: &'static str,
    what: &'static str,
}

const IMAGES: [Image; 2] = [
    Image { name: "large.jpg", content_type: "image/jpeg", what: "1280x720 JPEG" },
    Image { name: "coffee.png", content_type: "image/png", what: "600x400 PNG" },
];

/// Alternating rounds of the 8-client throughput comparison.
const ROUNDS: u32 = 3;

/// One side of the throughput comparison: requests per second and failures over a duration.
type Contender<'a> = Box<dyn Fn(Duration) -> (f64, usize) + 'a>;

struct Settings {
    reps: usize,
    seconds: Duration,
    out: PathBuf,
}

fn settings() -> Settings {
    let quick = std::env::args().any(|a| a == "--quick");
    Settings {
        reps: if quick { 10 } else { 40 },
        seconds: Duration::from_secs(if quick { 4 } else { 10 }),
        out: repo(),
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    summarize(&values.into_iter().collect::<Vec<_>>()).p50
}

fn step(what: &str) {
    eprintln!("bench: {what}");
}

fn target(url: String, key: Option<&str>, image: &Image) -> http::Target {
    http::Target {
        url,
        headers: key.map(|k| vec![("authorization".to_owned(), format!("Bearer {k}"))]).unwrap_or_default(),
        body: photo_bytes(image.name),
        content_type: image.content_type.to_owned(),
    }
}

/// Stock `wasmtime serve`, stopped on drop.
struct StockServer {
    child: Child,
    url: String,
}

impl Drop for StockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(started.elapsed() < within, "nothing listens on port {port} after {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn model_dir() -> PathBuf {
    repo().join("models/yolov3-tiny")
}

fn stock_binary() -> PathBuf {
    repo().join("target/stock-wasmtime/release/stock-wasmtime-serve")
}

fn stock_server() -> anyhow::Result<StockServer> {
    let port = free_port()?;
    let models = repo().join("models");
    let child = Command::new(stock_binary())
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .args(["-S", "cli", "-S", "nn", "-S"])
        .arg(format!("nn-graph=onnx::{}", model_dir().display()))
        .arg("--dir")
        .arg(format!("{}::/models", models.display()))
        .args(["--env", "YOLO_EDGE_DEFAULT_MODEL=yolov3-tiny"])
        .arg(yolo_edge_tests::component())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = StockServer { child, url: format!("http://127.0.0.1:{port}/detect") };
    wait_for_port(port, Duration::from_secs(120))?;
    Ok(server)
}

/// One client's warm latency of three pipelines on one image, request by request.
struct Latencies {
    /// The bare pipeline: total and inference ms.
    bare: Vec<f64>,
    bare_nn: Vec<f64>,
    /// The server's answers.
    answers: Vec<http::Answer>,
    /// The Python in-process pipeline, ms (absent when not asked for).
    python: Vec<f64>,
}

/// `reps` alternations of one bare pipeline run, one request to a server and (with
/// `python`) one Python in-process run, after three unmeasured ones.
fn interleaved(
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

/// The large photograph of [`large_photo`].
const XLARGE: Image = Image { name: "xlarge.jpg", content_type: "image/jpeg", what: "2560x1440 JPEG" };

/// The decode modes compared on [`XLARGE`], `auto` (the default) first.
const DECODE_MODES: [&str; 3] = ["auto", "fast", "full"];

/// One client on [`XLARGE`]: the host with each of [`DECODE_MODES`] and the Python in-process
/// pipeline (which decodes the whole image, as `Image.open` does), request by request.
/// Returns the host's answers by mode, then Python's latencies (ms).
fn large_photo(
    reps: usize,
    host: &Host,
    agent: &ureq::Agent,
    python: &mut python::Worker,
) -> anyhow::Result<(Vec<Vec<http::Answer>>, Vec<f64>)> {
    let targets: Vec<http::Target> = DECODE_MODES
        .iter()
        .map(|mode| target(host.url(&format!("/detect?decode={mode}")), Some(&host.key), &XLARGE))
        .collect();
    let path = photo(XLARGE.name);
    let mut answers: Vec<Vec<http::Answer>> = targets.iter().map(|_| Vec::new()).collect();
    let mut py = Vec::new();
    for rep in 0..reps + 3 {
        for (t, into) in targets.iter().zip(&mut answers) {
            let a = http::send(agent, t)?;
            anyhow::ensure!(a.status == 200, "the host failed on {}: {}", XLARGE.name, a.body);
            if rep >= 3 {
                into.push(a);
            }
        }
        // onnxruntime's workers spin for a while after a run (see `interleaved`).
        std::thread::sleep(Duration::from_millis(60));
        let ms = python.run(&path)?;
        std::thread::sleep(Duration::from_millis(60));
        if rep >= 3 {
            py.push(ms);
        }
    }
    Ok((answers, py))
}

/// The largest confidence difference between two `/detect` answers, their detections paired
/// as the end-to-end tests pair them ([`pair_detections`]: same class, best overlap); 1.0 when
/// a detection of either answer has no pair.
fn max_confidence_delta(a: &str, b: &str) -> f64 {
    let detections = |body: &str| -> Vec<Value> {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        v["detections"].as_array().cloned().unwrap_or_default()
    };
    let (a, b) = (detections(a), detections(b));
    let pairs = pair_detections(&a, &b);
    if a.len() != b.len() || pairs.iter().any(Option::is_none) {
        return 1.0;
    }
    let confidence = |v: &Value| v["confidence"].as_f64().unwrap_or(f64::NAN);
    b.iter()
        .zip(pairs.into_iter().flatten())
        .map(|(y, i)| (confidence(&a[i]) - confidence(y)).abs())
        .fold(0.0, f64::max)
}

fn latency_json(s: &Summary) -> Value {
    json!({"n": s.n, "p50_ms": s.p50, "p99_ms": s.p99, "mean_ms": s.mean})
}

/// Each answer's client-observed latency, ms, in order.
fn latencies(answers: &[http::Answer]) -> Vec<f64> {
    answers.iter().map(|a| a.ms).collect()
}

fn ms(answers: &[http::Answer]) -> Summary {
    summarize(&latencies(answers))
}

/// An answer's guest time, ms: the invocation's wall time less its inference, as the host
/// reports them (`x-wall-us`, `x-nn-us`).
fn guest_time_ms(a: &http::Answer) -> f64 {
    (a.number("x-wall-us").unwrap_or(0.0) - a.number("x-nn-us").unwrap_or(0.0)) / 1000.0
}

/// Fuel on against fuel off, one image, in alternating rounds.
struct Metering {
    /// Client latency, fuel on.
    on: Summary,
    /// Client latency, fuel off.
    off: Summary,
    /// Guest time (wall − inference), fuel on.
    guest_on: Summary,
    /// Guest time, fuel off.
    guest_off: Summary,
    /// What fuel costs whole requests: [`paired_overhead`] of the rounds' latencies.
    paired: f64,
}

impl Metering {
    /// What fuel costs from guest time: the guest p50s' difference over the fuel-off p50.
    fn guest_share(&self) -> f64 {
        if self.off.p50 > 0.0 { (self.guest_on.p50 - self.guest_off.p50) / self.off.p50 } else { f64::NAN }
    }
}

/// One client's request of an image (p50s and medians, ms): yolo-edge against the bare
/// pipeline and Python in-process, and yolo-edge's time split where the host measures it.
#[derive(serde::Serialize)]
struct OneClient {
    /// yolo-edge, client-observed.
    host: f64,
    /// The bare pipeline on every core.
    bare: f64,
    /// Python in-process.
    python: f64,
    /// yolo-edge's invocation wall time (the host's `x-wall-us`).
    wall: f64,
    /// yolo-edge's inference (`x-nn-us`).
    nn: f64,
    /// The bare pipeline's inference.
    bare_nn: f64,
}

impl OneClient {
    /// What ≤ 1.0× Python and ≤ 1.10× the bare pipeline leave yolo-edge over the bare pipeline,
    /// and where it spends more: outside the invocation (HTTP, the ledger commit), in the guest
    /// (the bare pipeline's decode and letterbox run as Wasm, plus instantiation and the
    /// wasi-nn calls) and in inference.
    fn paragraph(&self, image: &str) -> String {
        let outside = self.host - self.wall;
        // The guest's time (wall − inference) against the bare pipeline's outside inference.
        let (guest, bare_pre) = (self.wall - self.nn, self.bare - self.bare_nn);
        let python_allows = self.python - self.bare;
        let mut text = format!(
            "\nThe time behind the one-client targets ({image}, p50s): yolo-edge answers in {:.1} ms, the bare \
             pipeline in {:.1} ms and Python in-process in {:.1} ms, so ≤ 1.0× Python allows yolo-edge {python_allows:+.1} \
             ms over the bare pipeline and ≤ 1.10× the bare pipeline {:+.1} ms. It spends {:+.1} ms more: {outside:.1} \
             ms outside the invocation (the HTTP exchange and the ledger commit: client latency − wall time), \
             {:+.1} ms in the guest over the bare pipeline's own decode, letterbox and post-processing ({:.1} \
             against {:.1} ms: the same Rust as Wasm, with fuel, a fresh instance and the wasi-nn calls) and \
             {:+.1} ms in inference (medians, so the parts add up only roughly).",
            self.host,
            self.bare,
            self.python,
            0.10 * self.bare,
            self.host - self.bare,
            guest - bare_pre,
            guest,
            bare_pre,
            self.nn - self.bare_nn,
        );
        if outside > python_allows {
            text.push_str(
                " The HTTP exchange and the ledger commit alone take more than ≤ 1.0× Python allows: with the bare \
                 pipeline this close to Python in-process (neither serves HTTP nor keeps a ledger), no server \
                 reaches that target.",
            );
        }
        text.push('\n');
        text
    }
}

/// Throughput of every contender at one client count.
struct Row {
    clients: usize,
    /// (requests/s, failed) by contender, in [`CONTENDERS`] order (NaN: not measured).
    results: Vec<(f64, usize)>,
}

/// The throughput contenders, in table order.
const CONTENDERS: [&str; 6] = [
    "yolo-edge",
    "bare pipeline (same thread budget)",
    "Python in-process (N threads)",
    "Python ThreadingHTTPServer",
    "stock `wasmtime serve -S nn`",
    "yolo-edge, OpenVINO backend",
];

fn main() -> anyhow::Result<()> {
    let cfg = settings();
    let mut raw = serde_json::Map::new();
    let mut md = String::new();
    let cores = cores();
    raw.insert("machine".into(), json!({"cores": cores, "cpu": cpu_model()}));

    // Every server runs side by side from the start, so that each comparison interleaves its
    // sides: this machine's speed drifts by ±15 % within minutes, and a ratio of two blocks
    // measured minutes apart would mostly measure the drift.
    step("start the servers (yolo-edge with fuel on and off, on OpenVINO, Python, stock wasmtime)");
    yolo_edge_nn::onnx::init_runtime(None)?;
    yolo_edge_nn::openvino::init_runtime(None)?;
    // The same image again and again: with the result cache on, every request after the first
    // would be a hit. The contenders compute every answer, so the hosts do too.
    let unlimited = ["--tenant-rps", "0", "--tenant-max-concurrent", "0", "--no-result-cache"];
    let host = Host::start(&unlimited)?;
    let no_fuel = Host::start(&[&["--no-fuel"][..], &unlimited].concat())?;
    let ov_host = Host::start(&[&["--backend", "openvino"][..], &unlimited].concat())?;
    let py_server = python::Server::start(&model_dir())?;
    let mut py_worker = python::Worker::start(&model_dir())?;
    let stock_server = if stock_binary().is_file() {
        Some(stock_server()?)
    } else {
        eprintln!("bench: {} is missing; `cargo xtask bench` builds it", stock_binary().display());
        None
    };
    let agent = http::agent();

    // 1. Warm latency, one client: the bare pipeline (every core, as the host's lone
    //    request), our host and Python in-process, request by request.
    step("warm latency: bare native pipeline, yolo-edge and Python in-process, interleaved");
    let bare = bare::Bare::load(&model_dir(), cores, cores)?;
    let (mut bare_lat, mut bare_nn, mut host_lat, mut host_parts, mut py_lat) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut host_bodies = Vec::new();
    for image in &IMAGES {
        let t = target(host.url("/detect"), Some(&host.key), image);
        let l = interleaved(cfg.reps, &bare, image, &agent, &t, Some(&mut py_worker))?;
        anyhow::ensure!(l.answers.iter().all(|a| a.status == 200), "the host failed: {}", l.answers[0].body);
        let got: Value = serde_json::from_str(&l.answers[0].body)?;
        if got["detections"] != serde_json::to_value(bare.run(&photo_bytes(image.name))?.detections)? {
            eprintln!("bench: warning: the host's and the bare pipeline's answers differ on {}", image.name);
        }
        bare_lat.push(summarize(&l.bare));
        bare_nn.push(summarize(&l.bare_nn));
        host_lat.push(ms(&l.answers));
        host_bodies.push(l.answers[0].body.clone());
        py_lat.push(summarize(&l.python));
        let med = |h: &str| median(l.answers.iter().filter_map(|a| a.number(h)));
        host_parts.push(json!({
            "wall_us": med("x-wall-us"), "nn_us": med("x-nn-us"), "instantiate_us": med("x-instantiate-us"),
            "fuel": med("x-fuel"), "memory_bytes": med("x-memory-bytes"),
            // Every round's sample, in order, so that a p99 can be traced to its round and
            // compared with the other sides' samples of that round.
            "rounds": {
                "host_ms": latencies(&l.answers),
                "host_wall_ms": l.answers.iter().map(|a| a.number("x-wall-us").unwrap_or(f64::NAN) / 1000.0).collect::<Vec<_>>(),
                "bare_ms": l.bare, "python_ms": l.python,
            },
        }));
    }
    step("a large photograph: yolo-edge's three decode modes and Python in-process, interleaved");
    let large_photo = large_photo(cfg.reps, &host, &agent, &mut py_worker)?;
    drop(py_worker);

    // 2. Throughput with 1, 2, 4 and 8 clients, every contender in alternating rounds.
    step("throughput with 1, 2, 4 and 8 clients: every contender in alternating rounds");
    let large = target(host.url("/detect"), Some(&host.key), &IMAGES[0]);
    let large_bytes = photo_bytes(IMAGES[0].name);
    let large_path = photo(IMAGES[0].name);
    let py_t = target(py_server.url.clone(), None, &IMAGES[0]);
    let ov_t = target(ov_host.url("/detect"), Some(&ov_host.key), &IMAGES[0]);
    let stock_t = stock_server.as_ref().map(|s| target(s.url.clone(), None, &IMAGES[0]));
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
            // OpenVINO at the heaviest load only (its one-client latency is measured below).
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
    let host_rss = rss_mib(host.pid());

    // What one request's inference costs in CPU under load (one thread, as each inference
    // runs at 8 clients), measured alone: the floor under the 8-client targets.
    step("single-threaded inference alone (each inference's CPU under load)");
    let single = bare::Bare::load(&model_dir(), 1, 1)?;
    let single_nn: Vec<f64> = (0..cfg.reps)
        .map(|_| single.run(&large_bytes).map(|r| r.inference.as_secs_f64() * 1000.0))
        .collect::<anyhow::Result<_>>()?;
    let single_nn = summarize(&single_nn);
    drop(single);

    step("metering cost: fuel on vs off, interleaved");
    let mut metering = Vec::new();
    for image in &IMAGES {
        let on = target(host.url("/detect"), Some(&host.key), image);
        let off = target(no_fuel.url("/detect"), Some(&no_fuel.key), image);
        // Twice the usual rounds: this row decides a target and is a few percent of 50 ms.
        let answers = http::alternating(&[&on, &off], 2, 2 * cfg.reps)?;
        let guest = |answers: &[http::Answer]| summarize(&answers.iter().map(guest_time_ms).collect::<Vec<_>>());
        metering.push(Metering {
            on: ms(&answers[0]),
            off: ms(&answers[1]),
            guest_on: guest(&answers[0]),
            guest_off: guest(&answers[1]),
            paired: paired_overhead(&latencies(&answers[0]), &latencies(&answers[1])).unwrap_or(f64::NAN),
        });
    }
    drop(no_fuel);

    step("OpenVINO: bare pipeline and yolo-edge --backend openvino, interleaved");
    // The host's configuration: a latency compilation on every core, one stream per core.
    let bare_ov = bare::Bare::load_openvino(&model_dir(), cores, cores)?;
    let ov = interleaved(cfg.reps, &bare_ov, &IMAGES[0], &agent, &ov_t, None)?;
    anyhow::ensure!(ov.answers.iter().all(|a| a.status == 200), "OpenVINO host failed: {}", ov.answers[0].body);
    let (bare_ov_lat, bare_ov_nn, ov_host_lat) = (summarize(&ov.bare), summarize(&ov.bare_nn), ms(&ov.answers));
    drop(bare_ov);
    drop(ov_host);

    step("Python server and stock wasmtime serve: one client");
    let py_http = ms(&http::sequential(&py_t, 2, cfg.reps)?);
    drop(py_server);
    let stock_lat = match &stock_t {
        Some(t) => {
            let answers = http::sequential(t, 1, cfg.reps.min(15))?;
            anyhow::ensure!(answers.iter().all(|a| a.status == 200), "stock wasmtime failed: {}", answers[0].body);
            Some(ms(&answers))
        }
        None => None,
    };
    drop(stock_server);
    drop(host);
    drop(bare);

    step("result cache: repeats of one request");
    let cached_host = Host::start(&["--tenant-rps", "0", "--tenant-max-concurrent", "0"])?;
    let t = target(cached_host.url("/detect"), Some(&cached_host.key), &IMAGES[0]);
    let hits = http::sequential(&t, 1, cfg.reps)?;
    anyhow::ensure!(hits.iter().all(|a| a.status == 200), "cached answers failed: {}", hits[0].body);
    let cache_hit = ms(&hits);
    let hit_tokens = median(hits.iter().filter_map(|a| a.number("x-tokens")));
    drop(cached_host);

    step("shared ledger: one host on SQLite, one on PostgreSQL, two on one PostgreSQL");
    let ledger = shared_ledger(&cfg)?;

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
    let cold = summarize(&cold);

    // The pure-Wasm wasi-nn provider (the stock-Spin path): the function composed with the
    // provider baked by `cargo xtask setup` (yolo-edge bake: yolov3-tiny already loaded and
    // optimised in its initial memory), and, for comparison, with the provider as built.
    step("the function composed with the pure-Wasm wasi-nn provider (tract), baked and not");
    let compose = |provider: &str, out: &str| -> anyhow::Result<PathBuf> {
        let out = std::env::temp_dir().join(out);
        let (ok, _, err) = yolo_edge_tests::cli(
            &yolo_edge_tests::fresh_data_dir(),
            &["compose", "--provider", provider, "--output", out.to_str().unwrap_or("")],
        );
        anyhow::ensure!(ok, "compose: {err}");
        Ok(out)
    };
    let baked_provider = repo().join(yolo_edge::bake::DEFAULT_BAKED);
    let unbaked_provider = repo().join(yolo_edge::bake::DEFAULT_PROVIDER);
    let composed = compose(baked_provider.to_str().unwrap_or(""), "yolo-edge-bench-composed.wasm")?;
    let wasm_args = ["--wasi-nn", "none", "--timeout-ms", "120000", "--no-result-cache"];
    let start_wasm = |component: &PathBuf| {
        Host::start_full(component, &yolo_edge_tests::models(), &yolo_edge_tests::fresh_data_dir(), &wasm_args)
    };
    // The first start compiles the composed component and caches it. The Spin path and the
    // native host alternate request by request, and every image's pair within each round, so
    // that the ratios (a target) compare the same minutes of this machine for every image.
    // 30 rounds: this VM's speed swings by 1.5x within minutes, and 10 rounds' medians moved
    // by ~15 % from one run to the next.
    let wasm_host = start_wasm(&composed)?;
    let native_host = Host::start(&unlimited)?;
    let pairs: Vec<[http::Target; 2]> = IMAGES
        .iter()
        .map(|image| {
            [
                target(wasm_host.url("/detect"), Some(&wasm_host.key), image),
                target(native_host.url("/detect"), Some(&native_host.key), image),
            ]
        })
        .collect();
    let spin_rounds = cfg.reps.min(30);
    let answers = http::alternating(&pairs.iter().flatten().collect::<Vec<_>>(), 2, spin_rounds)?;
    if let Some(bad) = answers.iter().flatten().find(|a| a.status != 200) {
        anyhow::bail!("the composed component or the native host failed: {}", bad.body);
    }
    let wasm_lat: Vec<_> = answers.iter().step_by(2).map(|a| ms(a)).collect();
    let native_lat: Vec<_> = answers.iter().skip(1).step_by(2).map(|a| ms(a)).collect();
    drop(native_host);
    // What the provider's own convolution code is worth, request by request on large.jpg: the
    // default bake (Winograd 3×3 convolutions, our 4×8 GEMM kernel) against tract's im2col
    // lowering with our kernel (`YOLO_EDGE_NN_CONV=im2col`), and against tract as it ships
    // (im2col and tract's own kernel, `YOLO_EDGE_NN_KERNEL=tract` too).
    let variants: [(&str, &[(&str, &str)]); 2] = [
        ("im2col", &[(yolo_edge::bake::NN_CONV_VAR, "im2col")]),
        ("tract", &[(yolo_edge::bake::NN_CONV_VAR, "im2col"), (yolo_edge::bake::NN_KERNEL_VAR, "tract")]),
    ];
    let mut variant_hosts = Vec::new();
    for (name, env) in variants {
        let baked = std::env::temp_dir().join(format!("yolo-edge-bench-provider-{name}.wasm"));
        let (ok, _, err) = yolo_edge_tests::cli_env(
            &yolo_edge_tests::fresh_data_dir(),
            env,
            &[
                "bake",
                "--provider",
                unbaked_provider.to_str().unwrap_or(""),
                "--models",
                yolo_edge_tests::models().to_str().unwrap_or(""),
                "--model",
                "yolov3-tiny",
                "--output",
                baked.to_str().unwrap_or(""),
            ],
        );
        anyhow::ensure!(ok, "bake ({name}): {err}");
        let composed = compose(baked.to_str().unwrap_or(""), &format!("yolo-edge-bench-composed-{name}.wasm"))?;
        variant_hosts.push(start_wasm(&composed)?);
    }
    let mut variant_targets = vec![target(wasm_host.url("/detect"), Some(&wasm_host.key), &IMAGES[0])];
    variant_targets.extend(variant_hosts.iter().map(|h| target(h.url("/detect"), Some(&h.key), &IMAGES[0])));
    let conv_answers = http::alternating(&variant_targets.iter().collect::<Vec<_>>(), 1, cfg.reps.min(10))?;
    if let Some(bad) = conv_answers.iter().flatten().find(|a| a.status != 200) {
        anyhow::bail!("composed component (convolution comparison): {}", bad.body);
    }
    let (conv_ours, conv_im2col, conv_tract) = (ms(&conv_answers[0]), ms(&conv_answers[1]), ms(&conv_answers[2]));
    drop(variant_hosts);
    drop(wasm_host);
    // A restart (compiled component cached): time to listen, then the first request alone.
    let started = Instant::now();
    let wasm_host = start_wasm(&composed)?;
    let wasm_listen_ms = started.elapsed().as_secs_f64() * 1000.0;
    let t = target(wasm_host.url("/detect"), Some(&wasm_host.key), &IMAGES[1]);
    let sent = Instant::now();
    let first = http::send(&ureq::Agent::new_with_defaults(), &t)?;
    anyhow::ensure!(first.status == 200, "first answer of the composed component: {}", first.status);
    let wasm_first_ms = sent.elapsed().as_secs_f64() * 1000.0;
    drop(wasm_host);
    let unbaked = compose(unbaked_provider.to_str().unwrap_or(""), "yolo-edge-bench-composed-unbaked.wasm")?;
    let unbaked_host = start_wasm(&unbaked)?;
    let t = target(unbaked_host.url("/detect"), Some(&unbaked_host.key), &IMAGES[1]);
    let answers = http::sequential(&t, 1, cfg.reps.min(5))?;
    anyhow::ensure!(answers.iter().all(|a| a.status == 200), "the unbaked provider failed: {}", answers[0].body);
    let unbaked_lat = ms(&answers);
    drop(unbaked_host);
    let baked_size = std::fs::metadata(&baked_provider)?.len();
    let unbaked_size = std::fs::metadata(&unbaked_provider)?.len();
    let inst = yolo_edge::bake::instantiation_times(&std::fs::read(&baked_provider)?, 20)?;

    // The report.
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    md.push_str(&format!(
        "# Benchmarks\n\nMeasured by `cargo xtask bench` in one run on {} ({} cores), model yolov3-tiny (416×416), \
         ONNX Runtime 1.32 on the CPU. yolo-edge and the bare pipeline use the host's adaptive threading \
         (an inference that runs alone uses every core; under load, one single-threaded session per core); \
         Python uses `onnxruntime`'s default session options. Latencies are client-observed (loopback HTTP) \
         unless marked; ratios compare with baselines of the same run. Raw numbers: `BENCHMARKS.json`.\n\n",
        cpu_model(),
        cores
    ));
    md.push_str("## Warm latency, one client (interleaved request by request)\n\n| image | yolo-edge p50 / p99 (ms) | bare pipeline, all cores p50 / p99 (ms) | Python in-process p50 / p99 (ms) | yolo-edge ÷ Python | yolo-edge ÷ bare | inference, bare (ms) |\n|---|---|---|---|---|---|---|\n");
    for (i, image) in IMAGES.iter().enumerate() {
        md.push_str(&format!(
            "| {} ({}) | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | **{:.2}×** | **{:.2}×** | {:.1} |\n",
            image.name,
            image.what,
            host_lat[i].p50,
            host_lat[i].p99,
            bare_lat[i].p50,
            bare_lat[i].p99,
            py_lat[i].p50,
            py_lat[i].p99,
            ratio(host_lat[i].p50, py_lat[i].p50),
            ratio(host_lat[i].p50, bare_lat[i].p50),
            bare_nn[i].p50
        ));
    }
    md.push_str("\nInside yolo-edge (medians reported by the host):\n\n| image | wall (ms) | inference (ms) | guest, wall − inference (ms) | instantiation (µs) | fuel | peak memory (MiB) |\n|---|---|---|---|---|---|---|\n");
    for (i, image) in IMAGES.iter().enumerate() {
        let p = &host_parts[i];
        let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} |\n",
            image.name,
            f("wall_us") / 1000.0,
            f("nn_us") / 1000.0,
            (f("wall_us") - f("nn_us")) / 1000.0,
            f("instantiate_us"),
            f("fuel"),
            f("memory_bytes") / 1048576.0
        ));
    }
    md.push_str(&format!(
        "\n## Throughput ({}, requests/s; each row's contenders in {ROUNDS} alternating rounds of {:.0} s)\n\n| clients |",
        IMAGES[0].name,
        window.as_secs_f64()
    ));
    for name in CONTENDERS {
        md.push_str(&format!(" {name} |"));
    }
    md.push_str(" yolo-edge ÷ Python server | yolo-edge ÷ bare |\n|---|");
    md.push_str(&"---|".repeat(CONTENDERS.len() + 2));
    md.push('\n');
    for row in &rows {
        md.push_str(&format!("| {} |", row.clients));
        for (rps, bad) in &row.results {
            if rps.is_nan() {
                md.push_str(" - |");
            } else if *bad > 0 {
                md.push_str(&format!(" {rps:.1} ({bad} failed) |"));
            } else {
                md.push_str(&format!(" {rps:.1} |"));
            }
        }
        let r = &row.results;
        md.push_str(&format!(" **{:.2}×** | **{:.2}×** |\n", ratio(r[0].0, r[3].0), ratio(r[0].0, r[1].0)));
    }
    md.push_str(
        "\nThe bare pipeline and Python in-process run N threads in one process (no HTTP); the servers get N \
         concurrent clients over loopback HTTP. \"Same thread budget\": the bare pipeline uses the host's \
         sessions (one latency session on every core, one single-threaded session per core).\n",
    );
    md.push_str(&format!(
        "\nOne client over HTTP: Python server p50 {:.1} ms{}.\n",
        py_http.p50,
        stock_lat.as_ref().map_or(String::new(), |l| format!(
            ", stock `wasmtime serve` p50 {:.1} ms (it loads the graph for every request)",
            l.p50
        ))
    ));
    md.push_str(&format!(
        "\nA repeat of the same request is answered from the result cache (in-process LRU): p50 {:.1} ms \
         for {} against {:.1} ms computed, billed {hit_tokens:.0} tokens (`per_cache_hit`).\n",
        cache_hit.p50, IMAGES[0].name, host_lat[0].p50
    ));
    md.push_str(&format!(
        "\n## OpenVINO backend ({}, one client; a LATENCY compilation on every core for a lone request, THROUGHPUT streams under load, as the host runs it)\n\n| pipeline | p50 / p99 (ms) | inference p50 (ms) | ratio |\n|---|---|---|---|\n| bare, OpenVINO | {:.1} / {:.1} | {:.1} | vs bare ONNX Runtime {:.2}× |\n| yolo-edge `--backend openvino` | {:.1} / {:.1} | - | vs bare OpenVINO {:.2}× |\n",
        IMAGES[0].name, bare_ov_lat.p50, bare_ov_lat.p99, bare_ov_nn.p50, ratio(bare_ov_lat.p50, bare_lat[0].p50),
        ov_host_lat.p50, ov_host_lat.p99, ratio(ov_host_lat.p50, bare_ov_lat.p50)
    ));
    md.push_str("\n## Cost of fuel metering (same requests, interleaved)\n\nFuel on (the default): the fuel checks also give the guest its yields and deadline. Fuel off (`--no-fuel`): epoch checks do that instead. So each row is what metering costs a user over the same host without it.\n\nThe rounds alternate which side goes first. Whole requests are compared two ways: each round's fuel-on ÷ fuel-off latency, the median over the rounds (paired: a slow minute slows both requests of its round), and the two sides' p50s divided.\n\n| image | rounds | fuel on p50 (ms) | fuel off p50 (ms) | overhead, whole requests, paired (median of the rounds' on ÷ off) | overhead, whole requests (p50 ÷ p50) | guest time on / off (ms, wall − inference) | overhead from guest time (Δ guest ÷ fuel-off p50) |\n|---|---|---|---|---|---|---|---|\n");
    for (image, m) in IMAGES.iter().zip(&metering) {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:+.1}% | {:+.1}% | {:.1} / {:.1} | {:+.1}% |\n",
            image.name,
            m.on.n,
            m.on.p50,
            m.off.p50,
            m.paired * 100.0,
            (ratio(m.on.p50, m.off.p50) - 1.0) * 100.0,
            m.guest_on.p50,
            m.guest_off.p50,
            m.guest_share() * 100.0
        ));
    }
    let (photo_answers, photo_py) = &large_photo;
    let photo_py = summarize(photo_py);
    let photo_guest_ms = |answers: &[http::Answer]| median(answers.iter().map(guest_time_ms));
    let first_detection = |answers: &[http::Answer]| -> String {
        let v: Value = serde_json::from_str(&answers[0].body).unwrap_or(Value::Null);
        let d = &v["detections"][0];
        format!("{} {:.3}", d["class_name"].as_str().unwrap_or("none"), d["confidence"].as_f64().unwrap_or(0.0))
    };
    md.push_str(&format!(
        "\n## A large photograph ({}, {}): decode modes, one client (interleaved request by request)\n\nA JPEG several times the model input is decoded at 1/2, 1/4 or 1/8 scale (`decode=auto`, the default: while twice the letterboxed size is kept; `fast`: down to that size; `full`: never). Python in-process decodes the whole image (`Image.open`; Pillow's `draft` would reduce it the same way).\n\n| pipeline | p50 / p99 (ms) | guest, wall − inference (ms) | fuel | first detection | ÷ Python |\n|---|---|---|---|---|---|\n",
        XLARGE.name, XLARGE.what
    ));
    for (mode, answers) in DECODE_MODES.iter().zip(photo_answers) {
        let l = ms(answers);
        md.push_str(&format!(
            "| yolo-edge `decode={mode}` | {:.1} / {:.1} | {:.1} | {:.0} | {} | {:.2}× |\n",
            l.p50,
            l.p99,
            photo_guest_ms(answers),
            median(answers.iter().filter_map(|a| a.number("x-fuel"))),
            first_detection(answers),
            ratio(l.p50, photo_py.p50)
        ));
    }
    md.push_str(&format!("| Python in-process | {:.1} / {:.1} | - | - | - | 1.00× |\n", photo_py.p50, photo_py.p99));
    let spin_ratio = (0..IMAGES.len()).map(|i| ratio(wasm_lat[i].p50, native_lat[i].p50)).fold(f64::MIN, f64::max);
    let mut spin_rows = String::new();
    for (i, image) in IMAGES.iter().enumerate() {
        spin_rows.push_str(&format!(
            "| baked | {} | {:.0} / {:.0} | {:.0} | {:.1}× |\n",
            image.name,
            wasm_lat[i].p50,
            wasm_lat[i].p99,
            native_lat[i].p50,
            ratio(wasm_lat[i].p50, native_lat[i].p50)
        ));
    }
    md.push_str(&format!(
        "\n## Pure-Wasm inference (the stock-Spin path)\n\nThe function composed with the tract wasi-nn provider (`yolo-edge compose`), served with the host's wasi-nn off (`--wasi-nn none`, fuel metering on as in every yolo-edge row). The provider is baked (`yolo-edge bake`, Wizer): every instance starts with yolov3-tiny loaded and optimised in its copy-on-write initial memory, so a request only infers (tract, SIMD128, one thread). Unbaked, every request also loads and optimises the 35 MB model inside Wasm. The baked rows alternate request by request with the native host (fuel on, same image), every image's pair in each of {} rounds; the unbaked row runs alone and is compared with that native p50.\n\n| provider | image | p50 / p99 (ms) | native host p50 (ms) | Spin path ÷ native |\n|---|---|---|---|---|\n{spin_rows}| unbaked | {} | {:.0} / {:.0} | {:.0} | {:.1}× |\n\nThe provider computes yolov3-tiny's 3×3 convolutions (all but the first) as Winograd F(4×4, 3×3) (`provider/src/winograd.rs`: 36 GEMMs on the transformed tiles, 3.1× fewer multiply-adds) and every GEMM tile on its own wasm kernel (`provider/src/gemm.rs`: 4×8, relaxed-SIMD FMA, 8 k steps per loop). The same provider baked with tract's im2col lowering (`YOLO_EDGE_NN_CONV=im2col`), and with tract's own 8×8 kernel as well (`YOLO_EDGE_NN_KERNEL=tract`: tract as it ships), request by request on {}:\n\n| convolutions | p50 / p99 (ms) | ÷ ours |\n|---|---|---|\n| Winograd + our kernel (the default) | {:.0} / {:.0} | 1.00× |\n| im2col + our kernel | {:.0} / {:.0} | {:.2}× |\n| im2col + tract's kernel (tract as it ships) | {:.0} / {:.0} | {:.2}× |\n\n| the baked provider | value |\n|---|---|\n| size | {:.1} MB (unbaked {:.1} MB) |\n| compile, no cache | {:.0} ms |\n| instantiation (serving engine: pooling, copy-on-write image), first / median of 20 | {:.0} µs / {:.0} µs |\n| restart with the compiled component cached: process start → listening | {:.0} ms |\n| first request after that start ({}) | {:.0} ms |\n",
        spin_rounds,
        IMAGES[1].name,
        unbaked_lat.p50,
        unbaked_lat.p99,
        native_lat[1].p50,
        ratio(unbaked_lat.p50, native_lat[1].p50),
        IMAGES[0].name,
        conv_ours.p50,
        conv_ours.p99,
        conv_im2col.p50,
        conv_im2col.p99,
        ratio(conv_im2col.p50, conv_ours.p50),
        conv_tract.p50,
        conv_tract.p99,
        ratio(conv_tract.p50, conv_ours.p50),
        baked_size as f64 / 1e6,
        unbaked_size as f64 / 1e6,
        inst.compile.as_secs_f64() * 1000.0,
        inst.first.as_secs_f64() * 1e6,
        inst.median.as_secs_f64() * 1e6,
        wasm_listen_ms,
        IMAGES[1].name,
        wasm_first_ms
    ));
    md.push_str(&ledger.markdown());
    md.push_str(&format!(
        "\n## Start-up and memory\n\n| what | value |\n|---|---|\n| cold start, process start → first correct answer (compiled component cached) | p50 {:.0} ms (n = {}) |\n| host RSS after the throughput runs | {:.0} MiB |\n",
        cold.p50, cold.n, host_rss
    ));

    // The targets, with this run's numbers.
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    let spin_met = met(spin_ratio <= 3.5);
    let first_met = met(wasm_first_ms <= 1000.0);
    let worst = |f: &dyn Fn(usize) -> f64| (0..IMAGES.len()).map(f).fold(f64::MIN, f64::max);
    let vs_python = worst(&|i| ratio(host_lat[i].p50, py_lat[i].p50));
    let vs_bare = worst(&|i| ratio(host_lat[i].p50, bare_lat[i].p50));
    let eight = rows.iter().find(|r| r.clients == 8).map(|r| r.results.clone()).unwrap_or_default();
    let (host8, bare8, py8, ov8) = (eight[0].0, eight[1].0, eight[3].0, eight[5].0);
    let tp_vs_py = ratio(host8, py8);
    let tp_vs_bare = ratio(host8, bare8);
    let bare_pre = |i: usize| bare_lat[i].p50 - bare_nn[i].p50;
    // The target is judged on whole requests, paired by round. Fuel only slows guest code, so
    // the guest-time difference isolates it from the noise of inference; both are shown.
    let worst_metering = metering.iter().map(|m| m.paired).fold(f64::MIN, f64::max) * 100.0;
    let worst_metering_guest = metering.iter().map(Metering::guest_share).fold(f64::MIN, f64::max) * 100.0;
    let guest_ms = |i: usize| {
        (host_parts[i]["wall_us"].as_f64().unwrap_or(0.0) - host_parts[i]["nn_us"].as_f64().unwrap_or(0.0)) / 1000.0
    };
    md.push_str(&format!(
        "\n## Targets\n\n| target | this run | |\n|---|---|---|\n\
         | one client, warm p50 ≤ 1.0× Python in-process | {vs_python:.2}× (worst image) | {} |\n\
         | one client, warm p50 ≤ 1.10× the bare pipeline on every core | {vs_bare:.2}× (worst image) | {} |\n\
         | 8 clients ≥ 1.3× the Python server | {tp_vs_py:.2}× | {} |\n\
         | 8 clients ≥ 0.95× the bare pipeline, same thread budget | {tp_vs_bare:.2}× | {} |\n\
         | metering overhead ≤ 3 % | {worst_metering:+.1} % whole requests (paired), {worst_metering_guest:+.1} % from guest time (worst image) | {} |\n\
         | cold start ≤ 1 s | {:.0} ms | {} |\n\
         | Spin path (function + baked provider, `--wasi-nn none`): p50 ≤ 3.5× native | {spin_ratio:.2}× (worst image) | {spin_met} |\n\
         | Spin path: first request after a start, compiled component cached, ≤ 1 s | {wasm_first_ms:.0} ms | {first_met} |\n\n\
         Where the time goes: outside inference, a request of {} costs {:.1} ms inside yolo-edge (wall − \
         inference: the function decodes and letterboxes in the Wasm sandbox, in a fresh instance) against \
         {:.1} ms in the bare pipeline (total − inference), and {} {:.1} ms against {:.1} ms. The guest's JPEG \
         decoder (zune-jpeg) has no SIMD path in wasm32, while the bare pipeline's uses AVX2 and Python's \
         libjpeg-turbo; the Pillow-exact resize has a SIMD128 path in the guest. On 2 cores that CPU time is \
         taken from inference under load. Fuel metering costs guest time only; both estimates move by a few \
         percent between runs of this benchmark, in both directions (this machine's noise); the fuel counts \
         above are exact and repeat to the unit.\n",
        met(vs_python <= 1.0),
        met(vs_bare <= 1.10),
        met(tp_vs_py >= 1.3),
        met(tp_vs_bare >= 0.95),
        met(worst_metering <= 3.0),
        cold.p50,
        met(cold.p50 <= 1000.0),
        IMAGES[0].name,
        guest_ms(0),
        bare_pre(0),
        IMAGES[1].name,
        guest_ms(1),
        bare_pre(1),
    ));
    // The CPU each 8-client target leaves a request, against what this run measured.
    let cpu_ms = |rps: f64| cores as f64 * 1000.0 / rps;
    let (host_cpu, bare_cpu, budget) = (cpu_ms(host8), cpu_ms(bare8), cpu_ms(1.3 * py8));
    let large_pre = bare_pre(0);
    let ov_delta = max_confidence_delta(&host_bodies[0], &ov.answers[0].body);
    let ov_moves = if ov_delta < 1.0 {
        format!("moves {}'s confidences by up to {ov_delta:.4}", IMAGES[0].name)
    } else {
        format!("changes {}'s detections", IMAGES[0].name)
    };
    let floor = if budget - single_nn.p50 < large_pre {
        format!(
            " So only less arithmetic per image reaches 1.3×: OpenVINO's default precision on this CPU (bf16 \
             where the CPU has it) does {ov8:.1} req/s above, and {ov_moves} against ONNX Runtime's f32 (the \
             end-to-end tests allow 0.01 against the reference)."
        )
    } else {
        String::new()
    };
    md.push_str(&format!(
        "\nThe CPU behind the 8-client targets ({cores} cores, {}): yolo-edge spends {host_cpu:.1} ms of CPU per \
         request and the bare pipeline {bare_cpu:.1} ms ({:+.1} ms; ≥ 0.95× the bare pipeline allows {:.1} ms). ≥ 1.3× \
         the Python server allows {budget:.1} ms per request. ONNX Runtime's single-threaded f32 inference \
         alone takes {:.1} ms (p50, measured alone in this run), which leaves {:.1} ms for decoding, \
         letterboxing, HTTP and the ledger, where the bare pipeline's decode and letterbox alone take \
         {large_pre:.1} ms; the bare pipeline itself (no sandbox, no HTTP, no ledger) does {:.2}× the Python \
         server in the same rounds.{floor}\n",
        IMAGES[0].name,
        host_cpu - bare_cpu,
        cpu_ms(0.95 * bare8),
        single_nn.p50,
        budget - single_nn.p50,
        ratio(bare8, py8),
    ));
    // Where one client's request of the first image spends the time the one-client targets leave.
    let one = OneClient {
        host: host_lat[0].p50,
        bare: bare_lat[0].p50,
        python: py_lat[0].p50,
        wall: host_parts[0]["wall_us"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        nn: host_parts[0]["nn_us"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        bare_nn: bare_nn[0].p50,
    };
    md.push_str(&one.paragraph(IMAGES[0].name));
    md.push_str("\nReproduce: `cargo xtask bench` (about 10 minutes after set-up; the first run also builds stock `wasmtime serve`, ~15 minutes).\n");

    raw.insert("bare".into(), json!({
        "latency": IMAGES.iter().zip(&bare_lat).map(|(i, s)| (i.name.to_owned(), latency_json(s))).collect::<serde_json::Map<String, Value>>(),
        "inference": bare_nn.iter().map(latency_json).collect::<Vec<_>>(),
        "single_thread_inference": latency_json(&single_nn),
    }));
    raw.insert("one_client_ms".into(), serde_json::to_value(&one)?);
    raw.insert(
        "cpu_per_request_8_clients_ms".into(),
        json!({
            "host": host_cpu, "bare": bare_cpu, "allowed_for_1_3x_python_server": budget,
            "openvino_default_max_confidence_delta": ov_delta,
        }),
    );
    raw.insert("host".into(), json!({
        "latency": host_lat.iter().map(latency_json).collect::<Vec<_>>(),
        "inside": host_parts,
        "rss_mib": host_rss,
        "cold_start": latency_json(&cold),
        "cache_hit": latency_json(&cache_hit),
        "metering": metering.iter().map(|m| json!({"fuel_on": latency_json(&m.on), "fuel_off": latency_json(&m.off), "guest_on": latency_json(&m.guest_on), "guest_off": latency_json(&m.guest_off), "paired_overhead": m.paired})).collect::<Vec<_>>(),
    }));
    raw.insert(
        "throughput".into(),
        json!(rows.iter().map(|r| json!({
            "clients": r.clients,
            "rps": CONTENDERS.iter().zip(&r.results).map(|(n, (rps, bad))| ((*n).to_owned(), json!({"rps": if rps.is_nan() { Value::Null } else { json!(rps) }, "failed": bad}))).collect::<serde_json::Map<String, Value>>(),
        })).collect::<Vec<_>>()),
    );
    raw.insert(
        "python".into(),
        json!({"inprocess": py_lat.iter().map(latency_json).collect::<Vec<_>>(), "http_latency": latency_json(&py_http)}),
    );
    if let Some(lat) = &stock_lat {
        raw.insert("stock_wasmtime".into(), json!({"latency": latency_json(lat)}));
    }
    raw.insert(
        "openvino".into(),
        json!({
            "bare_latency": latency_json(&bare_ov_lat), "bare_inference": latency_json(&bare_ov_nn),
            "host_latency": latency_json(&ov_host_lat),
        }),
    );
    raw.insert(
        "wasm_provider".into(),
        json!({
            "baked": IMAGES.iter().zip(&wasm_lat).map(|(i, l)| (i.name.to_owned(), latency_json(l))).collect::<serde_json::Map<String, Value>>(),
            "native_alternated": IMAGES.iter().zip(&native_lat).map(|(i, l)| (i.name.to_owned(), latency_json(l))).collect::<serde_json::Map<String, Value>>(),
            "baked_vs_native_p50": IMAGES.iter().enumerate().map(|(i, im)| (im.name.to_owned(), json!(ratio(wasm_lat[i].p50, native_lat[i].p50)))).collect::<serde_json::Map<String, Value>>(),
            "unbaked": {"image": IMAGES[1].name, "latency": latency_json(&unbaked_lat)},
            "convolutions": {"image": IMAGES[0].name, "winograd": latency_json(&conv_ours), "im2col": latency_json(&conv_im2col), "tract": latency_json(&conv_tract)},
            "baked_size_bytes": baked_size, "unbaked_size_bytes": unbaked_size,
            "compile_ms": inst.compile.as_secs_f64() * 1000.0,
            "instantiation_us": {"first": inst.first.as_secs_f64() * 1e6, "median": inst.median.as_secs_f64() * 1e6},
            "restart_listen_ms": wasm_listen_ms, "first_request_ms": wasm_first_ms,
        }),
    );
    raw.insert("shared_ledger".into(), ledger.json());
    raw.insert(
        "large_photo".into(),
        json!({
            "image": XLARGE.name,
            "python": latency_json(&photo_py),
            "decode": DECODE_MODES.iter().zip(photo_answers).map(|(mode, a)| ((*mode).to_owned(), json!({
                "latency": latency_json(&ms(a)), "guest_ms": photo_guest_ms(a), "fuel": median(a.iter().filter_map(|x| x.number("x-fuel"))),
            }))).collect::<serde_json::Map<String, Value>>(),
        }),
    );
    raw.insert("images".into(), json!(IMAGES.iter().map(|i| i.name).collect::<Vec<_>>()));

    std::fs::write(cfg.out.join("BENCHMARKS.md"), &md)?;
    std::fs::write(cfg.out.join("BENCHMARKS.json"), serde_json::to_string_pretty(&Value::Object(raw))?)?;
    print!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{OneClient, max_confidence_delta};

    /// The one-client paragraph splits the difference from the run's numbers, and says that
    /// no server meets ≤ 1.0× Python only when HTTP and the ledger alone take more than that allows.
    #[test]
    fn one_client_paragraph_says_what_each_target_leaves() {
        let mut one = OneClient { host: 46.3, bare: 37.9, python: 39.2, wall: 44.5, nn: 30.4, bare_nn: 29.5 };
        let text = one.paragraph("large.jpg");
        for part in [
            "allows yolo-edge +1.3 ms",
            "the bare pipeline +3.8 ms",
            "It spends +8.4 ms more: 1.8 ms outside",
            "+5.7 ms in the guest",
            "+0.9 ms in inference",
            "no server",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        one.python = 45.0;
        assert!(!one.paragraph("large.jpg").contains("no server"));
    }

    #[test]
    fn confidence_deltas_pair_detections_in_order() {
        let a = r#"{"detections":[{"class_id":3,"confidence":0.62,"bbox":[0,0,10,10]},
            {"class_id":0,"confidence":0.30,"bbox":[20,20,30,30]}],"count":2}"#;
        // The same objects, listed in the other order and a little moved.
        let b = r#"{"detections":[{"class_id":0,"confidence":0.305,"bbox":[20,20,30,31]},
            {"class_id":3,"confidence":0.6,"bbox":[0,0,10,11]}],"count":2}"#;
        assert!((max_confidence_delta(a, b) - 0.02).abs() < 1e-9);
        assert_eq!(max_confidence_delta(a, a), 0.0);
        let other_class = r#"{"detections":[{"class_id":2,"confidence":0.62,"bbox":[0,0,10,10]},
            {"class_id":0,"confidence":0.30,"bbox":[20,20,30,30]}]}"#;
        assert_eq!(max_confidence_delta(a, other_class), 1.0);
        assert_eq!(max_confidence_delta(a, r#"{"detections":[],"count":0}"#), 1.0);
    }
}
