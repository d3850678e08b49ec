//! `cargo xtask bench`: one run, same machine, same images, same model:
//!
//! 1. the bare native pipeline (decode + letterbox + ONNX Runtime + NMS, in-process);
//! 2. Python (Pillow + `onnxruntime`), in-process and behind a `ThreadingHTTPServer`;
//! 3. stock `wasmtime serve -S nn` (Wasmtime 48.0.8, ONNX backend) serving the same component;
//! 4. our host: warm latency, throughput with 1/2/4/8 clients, cold start, instantiation
//!    time, RSS, and the cost of fuel metering (on vs off).
//!
//! The comparisons behind the targets interleave their sides (bare pipeline and host
//! request by request, fuel on and off likewise, the 8-client throughputs in alternating
//! rounds), because the speed of these shared machines drifts within minutes. The Python
//! in-process, one-client Python/stock and pure-Wasm figures are measured in their own blocks.
//!
//! Writes `BENCHMARKS.md` (tables, ratios against the baselines of the same run) and
//! `BENCHMARKS.json` (the raw numbers). Not a test: nothing here asserts a timing.
#![deny(missing_docs)]

mod bare;
mod http;
mod stats;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use stats::{Summary, summarize};
use yolo_edge_tests::{Host, photo, photo_bytes, repo};

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

/// A server process we start and stop (Python, stock Wasmtime).
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
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

fn python() -> PathBuf {
    repo().join(".cache/venv/bin/python")
}

fn model_dir() -> PathBuf {
    repo().join("models/yolov3-tiny")
}

fn python_server() -> anyhow::Result<Server> {
    let mut child = Command::new(python())
        .arg(repo().join("tools/bench_python.py"))
        .args(["serve", "--model-dir"])
        .arg(model_dir())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().trim_start_matches("listening on ").parse().context("python server port")?;
    Ok(Server { child, url: format!("http://127.0.0.1:{port}/detect") })
}

fn stock_binary() -> PathBuf {
    repo().join("target/stock-wasmtime/release/stock-wasmtime-serve")
}

fn stock_server() -> anyhow::Result<Server> {
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
    let server = Server { child, url: format!("http://127.0.0.1:{port}/detect") };
    wait_for_port(port, Duration::from_secs(120))?;
    Ok(server)
}

/// `reps` alternations of one bare pipeline run and one request to a server, after three
/// unmeasured ones: the bare runs' total and inference times (ms) and the server's answers.
fn interleaved(
    reps: usize,
    bare: &bare::Bare,
    image: &[u8],
    agent: &ureq::Agent,
    server: &http::Target,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<http::Answer>)> {
    for _ in 0..3 {
        bare.run(image)?;
        http::send(agent, server)?;
    }
    let (mut total, mut inference, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let started = Instant::now();
        let run = bare.run(image)?;
        total.push(started.elapsed().as_secs_f64() * 1000.0);
        inference.push(run.inference.as_secs_f64() * 1000.0);
        answers.push(http::send(agent, server)?);
    }
    Ok((total, inference, answers))
}

fn latency_json(s: &Summary) -> Value {
    json!({"n": s.n, "p50_ms": s.p50, "p99_ms": s.p99, "mean_ms": s.mean})
}

fn main() -> anyhow::Result<()> {
    let cfg = settings();
    let mut raw = serde_json::Map::new();
    let mut md = String::new();
    let cores = cores();
    raw.insert("machine".into(), json!({"cores": cores, "cpu": cpu_model()}));

    // Every server runs side by side from the start, so that each comparison interleaves its
    // two sides: this machine's speed drifts by ±15 % within minutes, and a ratio of two
    // blocks measured minutes apart would mostly measure the drift.
    step("start the servers (yolo-edge with fuel on and off, on OpenVINO, Python, stock wasmtime)");
    yolo_edge::nn::onnx::init_runtime(None)?;
    yolo_edge::nn::openvino::init_runtime(None)?;
    let unlimited = ["--tenant-rps", "0", "--tenant-max-concurrent", "0"];
    let host = Host::start(&unlimited)?;
    let no_fuel = Host::start(&[&["--no-fuel"][..], &unlimited].concat())?;
    let ov_host = Host::start(&[&["--backend", "openvino"][..], &unlimited].concat())?;
    let py_server = python_server()?;
    let stock_server = if stock_binary().is_file() {
        Some(stock_server()?)
    } else {
        eprintln!("bench: {} is missing; `cargo xtask bench` builds it", stock_binary().display());
        None
    };
    let agent = http::agent();

    // 1. Warm latency, one client: the bare pipeline and our host, request by request.
    step("warm latency: bare native pipeline and yolo-edge, interleaved");
    let bare = bare::Bare::load(&model_dir(), 1)?;
    let (mut bare_lat, mut bare_nn, mut host_lat, mut host_parts) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for image in &IMAGES {
        let bytes = photo_bytes(image.name);
        let t = target(host.url("/detect"), Some(&host.key), image);
        let (total, nn, answers) = interleaved(cfg.reps, &bare, &bytes, &agent, &t)?;
        anyhow::ensure!(answers.iter().all(|a| a.status == 200), "the host failed: {}", answers[0].body);
        let got: Value = serde_json::from_str(&answers[0].body)?;
        if got["detections"] != serde_json::to_value(bare.run(&bytes)?.detections)? {
            eprintln!("bench: warning: the host's and the bare pipeline's answers differ on {}", image.name);
        }
        bare_lat.push(summarize(&total));
        bare_nn.push(summarize(&nn));
        host_lat.push(summarize(&answers.iter().map(|a| a.ms).collect::<Vec<_>>()));
        let med = |h: &str| median(answers.iter().filter_map(|a| a.number(h)));
        host_parts.push(json!({
            "wall_us": med("x-wall-us"), "nn_us": med("x-nn-us"), "instantiate_us": med("x-instantiate-us"),
            "fuel": med("x-fuel"), "memory_bytes": med("x-memory-bytes"),
        }));
    }
    drop(bare);
    let ideal_tp = cores as f64 / (bare_nn[0].p50 / 1000.0);

    // 2. Throughput.
    step("yolo-edge host: throughput with 1, 2 and 4 clients");
    let large = target(host.url("/detect"), Some(&host.key), &IMAGES[0]);
    let mut host_tp = Vec::new();
    for clients in [1usize, 2, 4] {
        let (rps, bad) = http::throughput(&large, clients, cfg.seconds);
        host_tp.push((clients, rps, bad));
    }
    step("throughput with 8 clients, every server and the bare pipeline in alternating rounds");
    let bare_pool = bare::Bare::load(&model_dir(), cores)?;
    let large_bytes = photo_bytes(IMAGES[0].name);
    let py_t = target(py_server.url.clone(), None, &IMAGES[0]);
    let ov_t = target(ov_host.url("/detect"), Some(&ov_host.key), &IMAGES[0]);
    let stock_t = stock_server.as_ref().map(|s| target(s.url.clone(), None, &IMAGES[0]));
    let mut contenders: Vec<Contender<'_>> = vec![
        Box::new(|d| (bare_pool.throughput(&large_bytes, cores, d), 0)),
        Box::new(|d| http::throughput(&large, 8, d)),
        Box::new(|d| http::throughput(&py_t, 8, d)),
        Box::new(|d| http::throughput(&ov_t, 8, d)),
    ];
    if let Some(t) = &stock_t {
        contenders.push(Box::new(move |d| http::throughput(t, 8, d)));
    }
    // Unmeasured first, so that no round pays a server's first requests; rounds long enough
    // for several batches of 8 even on the slowest server.
    for warm_up in &contenders {
        warm_up(Duration::from_secs(1));
    }
    let window = (cfg.seconds / ROUNDS).max(Duration::from_secs(3));
    let mut rounds = vec![(0.0, 0usize); contenders.len()];
    for _ in 0..ROUNDS {
        for (sum, run) in rounds.iter_mut().zip(&contenders) {
            let (rps, bad) = run(window);
            *sum = (sum.0 + rps / f64::from(ROUNDS), sum.1 + bad);
        }
    }
    drop(contenders);
    drop(bare_pool);
    let bare_tp = rounds[0].0;
    host_tp.push((8, rounds[1].0, rounds[1].1));
    let (py_tp, py_bad) = rounds[2];
    let (ov_tp, ov_bad) = rounds[3];
    let stock_tp8 = rounds.get(4).copied();
    let host_rss = rss_mib(host.pid());

    step("metering cost: fuel on vs off, interleaved");
    let mut metering = Vec::new();
    for image in &IMAGES {
        let on = target(host.url("/detect"), Some(&host.key), image);
        let off = target(no_fuel.url("/detect"), Some(&no_fuel.key), image);
        let (a, b) = (http::sequential(&on, 2, 0)?, http::sequential(&off, 2, 0)?);
        drop((a, b));
        let (mut on_ms, mut off_ms, mut on_guest, mut off_guest) = (vec![], vec![], vec![], vec![]);
        for _ in 0..cfg.reps {
            for (t, ms, guest) in [(&on, &mut on_ms, &mut on_guest), (&off, &mut off_ms, &mut off_guest)] {
                let a = http::send(&agent, t)?;
                ms.push(a.ms);
                guest.push((a.number("x-wall-us").unwrap_or(0.0) - a.number("x-nn-us").unwrap_or(0.0)) / 1000.0);
            }
        }
        metering.push((summarize(&on_ms), summarize(&off_ms), summarize(&on_guest), summarize(&off_guest)));
    }
    drop(no_fuel);

    step("OpenVINO: bare pipeline and yolo-edge --backend openvino, interleaved");
    // The host's configuration: one stream (and infer request) per core.
    let bare_ov = bare::Bare::load_openvino(&model_dir(), cores)?;
    let (ov_total, ov_nn, ov_answers) = interleaved(cfg.reps, &bare_ov, &large_bytes, &agent, &ov_t)?;
    anyhow::ensure!(ov_answers.iter().all(|a| a.status == 200), "OpenVINO host failed: {}", ov_answers[0].body);
    let (bare_ov_lat, bare_ov_nn) = (summarize(&ov_total), summarize(&ov_nn));
    let ov_host_lat = summarize(&ov_answers.iter().map(|a| a.ms).collect::<Vec<_>>());
    drop(bare_ov);
    drop(ov_host);

    step("Python server and stock wasmtime serve: one client");
    let py_http = summarize(&http::sequential(&py_t, 2, cfg.reps)?.iter().map(|a| a.ms).collect::<Vec<_>>());
    drop(py_server);
    let stock = match (&stock_t, stock_tp8) {
        (Some(t), Some((tp, bad))) => {
            let answers = http::sequential(t, 1, cfg.reps.min(15))?;
            anyhow::ensure!(answers.iter().all(|a| a.status == 200), "stock wasmtime failed: {}", answers[0].body);
            Some((summarize(&answers.iter().map(|a| a.ms).collect::<Vec<_>>()), tp, bad))
        }
        _ => None,
    };
    drop(stock_server);
    drop(host);

    step("cold start");
    let mut cold = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let h = Host::start(&[])?;
        let t = target(h.url("/detect"), Some(&h.key), &IMAGES[1]);
        let first = http::send(&ureq::Agent::new_with_defaults(), &t)?;
        anyhow::ensure!(first.status == 200, "cold start answer {}", first.status);
        cold.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let cold = summarize(&cold);

    // 3. Python in-process (the script a user would write).
    step("Python in-process (Pillow + onnxruntime)");
    let out = Command::new(python())
        .arg(repo().join("tools/bench_python.py"))
        .args(["inprocess", "--model-dir"])
        .arg(model_dir())
        .args(["--reps", &cfg.reps.to_string()])
        .args(IMAGES.iter().map(|i| photo(i.name)))
        .output()?;
    anyhow::ensure!(out.status.success(), "bench_python.py: {}", String::from_utf8_lossy(&out.stderr));
    let py: Value = serde_json::from_slice(&out.stdout)?;
    let py_lat: Vec<Summary> = IMAGES
        .iter()
        .map(|i| {
            summarize(
                &py[i.name]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<f64>>())
                    .unwrap_or_default(),
            )
        })
        .collect();

    // 5. The pure-Wasm wasi-nn provider (the stock-Spin path), composed with the function.
    step("the function composed with the pure-Wasm wasi-nn provider (tract)");
    let composed = std::env::temp_dir().join("yolo-edge-bench-composed.wasm");
    let (ok, _, err) = yolo_edge_tests::cli(
        &yolo_edge_tests::fresh_data_dir(),
        &["compose", "--output", composed.to_str().unwrap_or("")],
    );
    anyhow::ensure!(ok, "compose: {err}");
    let wasm_host = Host::start_full(
        &composed,
        &yolo_edge_tests::models(),
        &yolo_edge_tests::fresh_data_dir(),
        &["--wasi-nn", "none", "--timeout-ms", "120000"],
    )?;
    let t = target(wasm_host.url("/detect"), Some(&wasm_host.key), &IMAGES[1]);
    let answers = http::sequential(&t, 1, cfg.reps.min(10))?;
    anyhow::ensure!(answers.iter().all(|a| a.status == 200), "the composed component failed: {}", answers[0].body);
    let wasm_lat = summarize(&answers.iter().map(|a| a.ms).collect::<Vec<_>>());
    drop(wasm_host);

    // The report.
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    md.push_str(&format!(
        "# Benchmarks\n\nMeasured by `cargo xtask bench` in one run on {} ({} cores), model yolov3-tiny (416×416), \
         ONNX Runtime 1.32 on the CPU with one intra-op thread per session. Latencies are client-observed \
         (loopback HTTP) unless marked; ratios compare with baselines of the same run. Raw numbers: `BENCHMARKS.json`.\n\n",
        cpu_model(),
        cores
    ));
    md.push_str("## Warm latency, one client\n\n| image | bare pipeline p50 / p99 (ms) | yolo-edge p50 / p99 (ms) | ratio p50 | Python in-process p50 (ms) | of which inference, bare (ms) |\n|---|---|---|---|---|---|\n");
    for (i, image) in IMAGES.iter().enumerate() {
        md.push_str(&format!(
            "| {} ({}) | {:.1} / {:.1} | {:.1} / {:.1} | **{:.2}×** | {:.1} | {:.1} |\n",
            image.name,
            image.what,
            bare_lat[i].p50,
            bare_lat[i].p99,
            host_lat[i].p50,
            host_lat[i].p99,
            ratio(host_lat[i].p50, bare_lat[i].p50),
            py_lat[i].p50,
            bare_nn[i].p50
        ));
    }
    md.push_str("\nInside yolo-edge (medians reported by the host):\n\n| image | wall (ms) | inference (ms) | instantiation (µs) | fuel | peak memory (MiB) |\n|---|---|---|---|---|---|\n");
    for (i, image) in IMAGES.iter().enumerate() {
        let p = &host_parts[i];
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} |\n",
            image.name,
            p["wall_us"].as_f64().unwrap_or(0.0) / 1000.0,
            p["nn_us"].as_f64().unwrap_or(0.0) / 1000.0,
            p["instantiate_us"].as_f64().unwrap_or(0.0),
            p["fuel"].as_f64().unwrap_or(0.0),
            p["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
        ));
    }
    md.push_str(&format!(
        "\n## Throughput ({}; the 1/2/4-client rows alone for {} s each, the 8-client rows and the bare pipeline in {ROUNDS} alternating rounds of {:.0} s)\n\n| server | clients | requests/s | failed | vs ideal {:.1}/s (cores ÷ bare inference) |\n|---|---|---|---|---|\n",
        IMAGES[0].name, cfg.seconds.as_secs(), window.as_secs_f64(), ideal_tp
    ));
    md.push_str(&format!(
        "| bare pipeline, {cores} threads | - | {bare_tp:.1} | 0 | {:.2}× |\n",
        ratio(bare_tp, ideal_tp)
    ));
    for (clients, rps, bad) in &host_tp {
        md.push_str(&format!("| yolo-edge | {clients} | {rps:.1} | {bad} | {:.2}× |\n", ratio(*rps, ideal_tp)));
    }
    md.push_str(&format!(
        "| Python ThreadingHTTPServer | 8 | {py_tp:.1} | {py_bad} | {:.2}× |\n",
        ratio(py_tp, ideal_tp)
    ));
    if let Some((_, tp, bad)) = &stock {
        md.push_str(&format!(
            "| stock `wasmtime serve -S nn` | 8 | {tp:.2} | {bad} | {:.2}× |\n",
            ratio(*tp, ideal_tp)
        ));
    }
    md.push_str(&format!(
        "| yolo-edge, OpenVINO backend | 8 | {ov_tp:.1} | {ov_bad} | {:.2}× |\n",
        ratio(ov_tp, ideal_tp)
    ));
    let host8 = host_tp.last().map_or(0.0, |t| t.1);
    md.push_str(&format!(
        "\nyolo-edge with 8 clients: **{:.1}×** the Python server{}.\n",
        ratio(host8, py_tp),
        stock
            .as_ref()
            .map_or(String::new(), |(_, tp, _)| format!(", **{:.1}×** stock `wasmtime serve`", ratio(host8, *tp)))
    ));
    md.push_str(&format!(
        "\nOne client over HTTP: Python server p50 {:.1} ms{}.\n",
        py_http.p50,
        stock.as_ref().map_or(String::new(), |(l, _, _)| format!(
            ", stock `wasmtime serve` p50 {:.1} ms (it loads the graph for every request)",
            l.p50
        ))
    ));
    md.push_str(&format!(
        "\n## OpenVINO backend ({}, one client; one stream per core, as the host runs it)\n\n| pipeline | p50 / p99 (ms) | inference p50 (ms) | ratio |\n|---|---|---|---|\n| bare, OpenVINO | {:.1} / {:.1} | {:.1} | vs bare ONNX Runtime {:.2}× |\n| yolo-edge `--backend openvino` | {:.1} / {:.1} | - | vs bare OpenVINO {:.2}× |\n",
        IMAGES[0].name, bare_ov_lat.p50, bare_ov_lat.p99, bare_ov_nn.p50, ratio(bare_ov_lat.p50, bare_lat[0].p50),
        ov_host_lat.p50, ov_host_lat.p99, ratio(ov_host_lat.p50, bare_ov_lat.p50)
    ));
    md.push_str("\n## Cost of fuel metering (same requests, interleaved)\n\n| image | fuel on p50 (ms) | fuel off p50 (ms) | overhead, whole requests | guest time on / off (ms, wall − inference) | overhead from guest time (Δ guest ÷ fuel-off p50) |\n|---|---|---|---|---|---|\n");
    for (i, image) in IMAGES.iter().enumerate() {
        let (on, off, gon, goff) = &metering[i];
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:+.1}% | {:.1} / {:.1} | {:+.1}% |\n",
            image.name,
            on.p50,
            off.p50,
            (ratio(on.p50, off.p50) - 1.0) * 100.0,
            gon.p50,
            goff.p50,
            ratio(gon.p50 - goff.p50, off.p50) * 100.0
        ));
    }
    md.push_str(&format!(
        "\n## Pure-Wasm inference (the stock-Spin path)\n\nThe function composed with the tract wasi-nn provider, served with the host's wasi-nn off; every request loads and optimises the 35 MB model inside Wasm, then infers there.\n\n| image | p50 / p99 (ms) | vs yolo-edge native p50 |\n|---|---|---|\n| {} | {:.0} / {:.0} | {:.1}× slower |\n",
        IMAGES[1].name, wasm_lat.p50, wasm_lat.p99, ratio(wasm_lat.p50, host_lat[1].p50)
    ));
    md.push_str(&format!(
        "\n## Start-up and memory\n\n| what | value |\n|---|---|\n| cold start, process start → first correct answer (compiled component cached) | p50 {:.0} ms (n = {}) |\n| host RSS after the throughput runs | {:.0} MiB |\n",
        cold.p50, cold.n, host_rss
    ));

    // The targets, with this run's numbers.
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    let worst_ratio =
        IMAGES.iter().enumerate().map(|(i, _)| ratio(host_lat[i].p50, bare_lat[i].p50)).fold(0.0, f64::max);
    let worst_metering =
        metering.iter().map(|(on, off, _, _)| ratio(on.p50, off.p50) - 1.0).fold(f64::MIN, f64::max) * 100.0;
    // Fuel only slows guest code, so the guest-time difference isolates it from the noise of
    // inference; the target is still judged on whole requests.
    let worst_metering_guest =
        metering.iter().map(|(_, off, gon, goff)| ratio(gon.p50 - goff.p50, off.p50)).fold(f64::MIN, f64::max) * 100.0;
    let stock_tp = stock.as_ref().map_or(f64::NAN, |(_, tp, _)| *tp);
    md.push_str(&format!(
        "\n## Targets\n\n| target | this run | |\n|---|---|---|\n\
         | warm p50 ≤ 1.10× the bare pipeline (same backend) | {worst_ratio:.2}× (worst image) | {} |\n\
         | 8-client throughput ≥ 0.9 × cores ÷ bare inference | {:.2}× | {} |\n\
         | metering overhead ≤ 3 % | {worst_metering:+.1} % whole requests, {worst_metering_guest:+.1} % from guest time (worst image) | {} |\n\
         | cold start ≤ 1 s | {:.0} ms | {} |\n\
         | ≥ 5× stock `wasmtime serve -S nn` | {:.1}× | {} |\n\
         | ≥ 1.5× the Python server | {:.1}× | {} |\n\n\
         Why the misses, on this 2-core machine: outside inference, a request of {} costs {:.1} ms \
         inside yolo-edge (wall − inference: the function decodes and letterboxes in the Wasm sandbox, \
         which is its point, in a fresh instance) against {:.1} ms in the bare pipeline (total − \
         inference). The guest's JPEG decoder (zune-jpeg) has no SIMD path in wasm32; the Pillow-exact \
         resize does (SIMD128), but runs in a fresh, cache-cold instance. On 2 cores that CPU time is \
         taken from inference, so latency and throughput trail the bare pipeline by about that \
         difference; the bare pipeline itself reaches {:.2}× of the ideal, since it decodes and resizes \
         too. The Python baseline decodes and resizes with native SIMD code (libjpeg-turbo, Pillow) \
         and lets ONNX Runtime use both cores for one request. Stock `wasmtime serve` loads the graph \
         for every request, but 5× its throughput would exceed what 2 cores can infer at all (the \
         ideal above). Fuel metering costs guest time only: {:.1} ms on vs {:.1} ms off for {}; \
         both estimates move by a few percent between runs of this benchmark, in both directions \
         (this machine's noise); the fuel counts above are exact and repeat to the unit.\n",
        met(worst_ratio <= 1.10),
        ratio(host8, ideal_tp),
        met(ratio(host8, ideal_tp) >= 0.9),
        met(worst_metering <= 3.0),
        cold.p50,
        met(cold.p50 <= 1000.0),
        ratio(host8, stock_tp),
        met(ratio(host8, stock_tp) >= 5.0),
        ratio(host8, py_tp),
        met(ratio(host8, py_tp) >= 1.5),
        IMAGES[0].name,
        host_parts[0]["wall_us"].as_f64().unwrap_or(0.0) / 1000.0
            - host_parts[0]["nn_us"].as_f64().unwrap_or(0.0) / 1000.0,
        bare_lat[0].p50 - bare_nn[0].p50,
        ratio(bare_tp, ideal_tp),
        metering[0].2.p50,
        metering[0].3.p50,
        IMAGES[0].name,
    ));
    md.push_str("\nReproduce: `cargo xtask bench` (about 5 minutes after set-up; the first run also builds stock `wasmtime serve`, ~10 minutes).\n");

    raw.insert("bare".into(), json!({
        "latency": IMAGES.iter().zip(&bare_lat).map(|(i, s)| (i.name.to_owned(), latency_json(s))).collect::<serde_json::Map<String, Value>>(),
        "inference": bare_nn.iter().map(latency_json).collect::<Vec<_>>(),
        "throughput_rps": bare_tp, "ideal_rps": ideal_tp,
    }));
    raw.insert("host".into(), json!({
        "latency": host_lat.iter().map(latency_json).collect::<Vec<_>>(),
        "inside": host_parts,
        "throughput": host_tp.iter().map(|(c, r, b)| json!({"clients": c, "rps": r, "failed": b})).collect::<Vec<_>>(),
        "rss_mib": host_rss,
        "cold_start": latency_json(&cold),
        "metering": metering.iter().map(|(a, b, c, d)| json!({"fuel_on": latency_json(a), "fuel_off": latency_json(b), "guest_on": latency_json(c), "guest_off": latency_json(d)})).collect::<Vec<_>>(),
    }));
    raw.insert(
        "python".into(),
        json!({
            "inprocess": py_lat.iter().map(latency_json).collect::<Vec<_>>(),
            "http_latency": latency_json(&py_http), "throughput_rps_8_clients": py_tp,
        }),
    );
    if let Some((lat, tp, bad)) = &stock {
        raw.insert(
            "stock_wasmtime".into(),
            json!({"latency": latency_json(lat), "throughput_rps_8_clients": tp, "failed": bad}),
        );
    }
    raw.insert(
        "openvino".into(),
        json!({
            "bare_latency": latency_json(&bare_ov_lat), "bare_inference": latency_json(&bare_ov_nn),
            "host_latency": latency_json(&ov_host_lat), "host_throughput_rps_8_clients": ov_tp,
        }),
    );
    raw.insert("wasm_provider".into(), json!({"image": IMAGES[1].name, "latency": latency_json(&wasm_lat)}));
    raw.insert("images".into(), json!(IMAGES.iter().map(|i| i.name).collect::<Vec<_>>()));

    std::fs::write(cfg.out.join("BENCHMARKS.md"), &md)?;
    std::fs::write(cfg.out.join("BENCHMARKS.json"), serde_json::to_string_pretty(&Value::Object(raw))?)?;
    print!("{md}");
    Ok(())
}
