//! The Python baselines (`tools/bench_python.py`: Pillow + `onnxruntime` with its default
//! session options, the script a user would write instead of yolo-edge): in-process, one
//! detection at a time on request (so it can be interleaved with the other contenders),
//! with N threads, and behind a `ThreadingHTTPServer`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use yolo_edge_tests::repo;

fn python() -> PathBuf {
    repo().join(".cache/venv/bin/python")
}

fn script(mode: &str, model_dir: &Path) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("tools/bench_python.py")).arg(mode).arg("--model-dir").arg(model_dir);
    cmd
}

/// A Python process that runs one in-process detection per image path it is sent.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Start it and wait until its session is loaded.
    pub fn start(model_dir: &Path) -> anyhow::Result<Self> {
        let mut child = script("worker", model_dir).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut ready = String::new();
        stdout.read_line(&mut ready)?;
        anyhow::ensure!(ready.trim() == "ready", "the Python worker did not start: {ready:?}");
        Ok(Self { child, stdin, stdout })
    }

    /// Detect on `image` (a file): the pipeline's milliseconds, measured in Python.
    pub fn run(&mut self, image: &Path) -> anyhow::Result<f64> {
        writeln!(self.stdin, "{}", image.display())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.trim().parse().with_context(|| format!("the Python worker answered {line:?}"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `threads` Python threads calling the in-process pipeline on `image` back to back for
/// `duration` (after one warm-up run, not counted): pipelines per second and failures.
pub fn throughput(model_dir: &Path, image: &Path, threads: usize, duration: Duration) -> anyhow::Result<(f64, usize)> {
    let out = script("threads", model_dir)
        .args(["--threads", &threads.to_string(), "--seconds", &duration.as_secs_f64().to_string()])
        .arg(image)
        .output()?;
    anyhow::ensure!(out.status.success(), "bench_python.py threads: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["rps"].as_f64().unwrap_or(0.0), v["failed"].as_u64().unwrap_or(0) as usize))
}

/// The Python `ThreadingHTTPServer`, stopped on drop.
pub struct Server {
    child: Child,
    /// Its `/detect` URL.
    pub url: String,
}

impl Server {
    /// Start it on a free port.
    pub fn start(model_dir: &Path) -> anyhow::Result<Self> {
        let mut child = script("serve", model_dir).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let port: u16 = line.trim().trim_start_matches("listening on ").parse().context("python server port")?;
        Ok(Self { child, url: format!("http://127.0.0.1:{port}/detect") })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
