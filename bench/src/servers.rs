//! The servers and pipelines every part measures: yolo-edge (fuel on and off, on OpenVINO, the
//! composed Spin-path component), the Python baselines and stock `wasmtime serve`. Measures
//! nothing itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yolo_edge_tests::{Host, repo};

use crate::common::step;
use crate::python;

/// The same image again and again: with the result cache on, every request after the first
/// would be a hit. The contenders compute every answer, so the hosts do too.
pub const UNLIMITED: [&str; 5] = ["--tenant-rps", "0", "--tenant-max-concurrent", "0", "--no-result-cache"];

/// The model every pipeline runs.
pub fn model_dir() -> PathBuf {
    repo().join("models/yolov3-tiny")
}

/// Every server that runs from the start.
pub struct Servers {
    /// yolo-edge, fuel on (the default).
    pub host: Host,
    /// yolo-edge `--no-fuel`.
    pub no_fuel: Host,
    /// yolo-edge `--backend openvino`.
    pub ov_host: Host,
    /// The Python `ThreadingHTTPServer`.
    pub py_server: python::Server,
    /// The Python in-process pipeline.
    pub py_worker: python::Worker,
    /// Stock `wasmtime serve`, when `cargo xtask bench` has built it.
    pub stock: Option<StockServer>,
}

impl Servers {
    /// Start them all and the ONNX Runtime and OpenVINO runtimes of the bare pipelines.
    pub fn start() -> anyhow::Result<Self> {
        // Every server runs side by side from the start, so that each comparison interleaves its
        // sides: this machine's speed drifts by ±15 % within minutes, and a ratio of two blocks
        // measured minutes apart would mostly measure the drift.
        step("start the servers (yolo-edge with fuel on and off, on OpenVINO, Python, stock wasmtime)");
        yolo_edge_nn::onnx::init_runtime(None)?;
        yolo_edge_nn::openvino::init_runtime(None)?;
        let host = Host::start(&UNLIMITED)?;
        let no_fuel = Host::start(&[&["--no-fuel"][..], &UNLIMITED].concat())?;
        let ov_host = Host::start(&[&["--backend", "openvino"][..], &UNLIMITED].concat())?;
        let py_server = python::Server::start(&model_dir())?;
        let py_worker = python::Worker::start(&model_dir())?;
        let stock = if stock_binary().is_file() {
            Some(stock_server()?)
        } else {
            eprintln!("bench: {} is missing; `cargo xtask bench` builds it", stock_binary().display());
            None
        };
        Ok(Self { host, no_fuel, ov_host, py_server, py_worker, stock })
    }
}

/// Stock `wasmtime serve`, stopped on drop.
pub struct StockServer {
    child: Child,
    /// Its `/detect` URL.
    pub url: String,
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

/// yolo-edge serving a composed component (the function with a wasi-nn provider) with its own
/// wasi-nn off, in a fresh data directory.
pub fn start_composed(component: &Path) -> anyhow::Result<Host> {
    let wasm_args = ["--wasi-nn", "none", "--timeout-ms", "120000", "--no-result-cache"];
    Host::start_full(component, &yolo_edge_tests::models(), &yolo_edge_tests::fresh_data_dir(), &wasm_args)
}
