//! `cargo xtask dist DIR`: the server alone, for a container image (deploy/Containerfile).

use std::path::Path;

use anyhow::Context as _;

use crate::repo::{Repo, WASM_CRATES, cargo, ensure_symlink, run_cmd, step, wheel_library};

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
    pub(crate) fn dist(&self, out: &Path) -> anyhow::Result<()> {
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
