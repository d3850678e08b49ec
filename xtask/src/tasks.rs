//! The tasks after set-up: serve, the tests, the checks, the benchmark and the heavy suite.

use std::process::Command;

use anyhow::Context as _;

use crate::repo::{Repo, WASM_CRATES, cargo, run_cmd, step};

impl Repo {
    pub(crate) fn serve(&self, extra: &[String]) -> anyhow::Result<()> {
        let key = self.demo_key()?;
        step("serve");
        println!(
            "When it says it is listening, open http://127.0.0.1:8080/ in a browser and paste the key {key}, or try:\n\n  curl -s -X POST -H 'Authorization: Bearer {key}' -H 'Content-Type: image/png' --data-binary @tests/data/coffee.png http://127.0.0.1:8080/detect\n\nand see what it cost with `target/release/yolo-edge usage --tenant demo`.\n"
        );
        run_cmd(
            Command::new(self.host_binary())
                .arg("serve")
                .arg("--component")
                .arg(self.component())
                .arg("--models")
                .arg(self.path("models"))
                .args(extra)
                .current_dir(&self.root),
        )
    }

    pub(crate) fn test(&self, extra: &[String]) -> anyhow::Result<()> {
        self.checks()?;
        step("tests (unit and end-to-end, release profile: the host is already built there)");
        run_cmd(
            cargo()
                .args(["test", "--release", "--workspace"])
                .args(WASM_CRATES.iter().flat_map(|c| ["--exclude", c]))
                .args(extra)
                .env("YOLO_EDGE_BIN", self.host_binary())
                .env("YOLO_EDGE_COMPONENT", self.component())
                .current_dir(&self.root),
        )?;
        step(
            "yolo-core's and the wasi-nn provider's unit tests compiled for wasm32-wasip2 (their SIMD128 paths), run by Wasmtime",
        );
        run_cmd(
            cargo().args(["build", "--release", "-p", "yolo-edge", "--example", "wasi_run"]).current_dir(&self.root),
        )?;
        run_cmd(
            cargo()
                .args(["test", "--profile", "wasm", "--target", "wasm32-wasip2", "-p", "yolo-core"])
                .args(["-p", "yolo-edge-nn-provider", "--lib"])
                .env("CARGO_TARGET_WASM32_WASIP2_RUNNER", self.path("target/release/examples/wasi_run"))
                .current_dir(&self.root),
        )
    }

    /// `cargo xtask bench`: build the stock baseline if needed, then run the benchmark.
    pub(crate) fn bench(&self, extra: &[String]) -> anyhow::Result<()> {
        step("stock `wasmtime serve` 48.0.8 with wasi-nn's ONNX backend (baseline; the first build takes ~15 minutes)");
        run_cmd(
            cargo()
                .args(["build", "--release", "--target-dir"])
                .arg(self.path("target/stock-wasmtime"))
                .env("ORT_LIB_LOCATION", self.path(".cache/onnxruntime"))
                .current_dir(self.path("bench/stock-wasmtime")),
        )?;
        step("benchmark (writes BENCHMARKS.md and BENCHMARKS.json)");
        run_cmd(
            cargo()
                .args(["run", "--release", "-p", "yolo-edge-bench", "--"])
                .args(extra)
                .env("YOLO_EDGE_BIN", self.host_binary())
                .env("YOLO_EDGE_COMPONENT", self.component())
                .current_dir(&self.root),
        )
    }

    /// The heavy suite: the long load test, the soak and a bounded fuzzing run.
    pub(crate) fn heavy(&self) -> anyhow::Result<()> {
        step("heavy: long load test (YOLO_EDGE_LOAD_SECONDS, default 180)");
        run_cmd(
            cargo()
                .args(["test", "--release", "-p", "yolo-edge-tests", "--test", "load", "--", "--ignored"])
                .env("YOLO_EDGE_BIN", self.host_binary())
                .env("YOLO_EDGE_COMPONENT", self.component())
                .current_dir(&self.root),
        )?;
        step("heavy: soak, saturating mixed load (YOLO_EDGE_SOAK_SECONDS, default 600) with a report");
        run_cmd(
            cargo()
                .args([
                    "test",
                    "--release",
                    "-p",
                    "yolo-edge-tests",
                    "--test",
                    "soak",
                    "--",
                    "--ignored",
                    "--nocapture",
                ])
                .env("YOLO_EDGE_BIN", self.host_binary())
                .env("YOLO_EDGE_COMPONENT", self.component())
                .current_dir(&self.root),
        )?;
        step("heavy: fuzz the request parsing and decoding (cargo fuzz, nightly, YOLO_EDGE_FUZZ_SECONDS, default 120)");
        let nightly = Command::new("cargo").args(["+nightly", "--version"]).output().is_ok_and(|o| o.status.success());
        if !nightly {
            println!("skipped: cargo fuzz needs a nightly toolchain, and this machine has none");
            return Ok(());
        }
        let has_fuzz = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
        if !has_fuzz {
            run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
                .context("installing cargo-fuzz from crates.io failed")?;
        }
        let corpus = self.path("fuzz/corpus/request");
        std::fs::create_dir_all(&corpus)?;
        std::fs::write(corpus.join("json"), b"\x01\n{\"image\":\"aGVsbG8=\",\"conf\":0.3}")?;
        std::fs::write(corpus.join("query"), b"\x02conf=0.3&classes=0,2\n\x89PNG\r\n\x1a\n")?;
        let seconds = std::env::var("YOLO_EDGE_FUZZ_SECONDS").unwrap_or_else(|_| "120".to_owned());
        run_cmd(
            Command::new("cargo")
                .args(["+nightly", "fuzz", "run", "request", "--target-dir"])
                .arg(self.path("target/fuzz"))
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg("-rss_limit_mb=2048")
                .current_dir(self.path("fuzz")),
        )
        .context("the fuzzer found a failing input (see fuzz/artifacts/request/)")
    }

    /// What `test` and `lint` both check before anything runs: rustfmt, clippy with warnings
    /// denied (native crates, and the wasm32-wasip2 components with yolo-core's guest-only
    /// SIMD128 code), and the documentation (`cargo doc`, warnings denied; the components, which
    /// have no public API, with their private items).
    pub(crate) fn checks(&self) -> anyhow::Result<()> {
        step("rustfmt --check");
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]).current_dir(&self.root))
            .context("code is not formatted: run `cargo fmt --all`")?;
        step("clippy (native crates)");
        run_cmd(
            cargo()
                .args(["clippy", "--workspace", "--all-targets"])
                .args(WASM_CRATES.iter().flat_map(|c| ["--exclude", c]))
                .args(["--", "-D", "warnings"])
                .current_dir(&self.root),
        )?;
        step("clippy (the wasm32-wasip2 components, and yolo-core's guest-only SIMD128 code)");
        run_cmd(
            cargo()
                .args(["clippy", "--target", "wasm32-wasip2", "--all-targets", "-p", "yolo-core"])
                .args(WASM_CRATES.iter().flat_map(|c| ["-p", c]))
                .args(["--", "-D", "warnings"])
                .current_dir(&self.root),
        )?;
        step("cargo doc (native crates, then the components), warnings denied");
        run_cmd(
            cargo()
                .args(["doc", "--no-deps", "--workspace"])
                .args(WASM_CRATES.iter().flat_map(|c| ["--exclude", c]))
                .env("RUSTDOCFLAGS", "-D warnings")
                .current_dir(&self.root),
        )?;
        run_cmd(
            cargo()
                .args(["doc", "--no-deps", "--document-private-items", "--target", "wasm32-wasip2"])
                .args(WASM_CRATES.iter().flat_map(|c| ["-p", c]))
                // The guest builds with SIMD128 (.cargo/config.toml); rustdoc reads its own flags.
                .env("RUSTDOCFLAGS", "-D warnings -A rustdoc::private-intra-doc-links -C target-feature=+simd128")
                .current_dir(&self.root),
        )
    }

    pub(crate) fn lint(&self) -> anyhow::Result<()> {
        self.checks()?;
        step("the `cuda` feature compiles");
        run_cmd(cargo().args(["check", "-p", "yolo-edge", "--features", "cuda"]).current_dir(&self.root))
    }
}
