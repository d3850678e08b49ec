//! The repository's paths and what every task uses to run programs and print its steps.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The crates that only build for wasm32-wasip2.
pub(crate) const WASM_CRATES: [&str; 3] = ["yolo-edge-function", "yolo-edge-nn-provider", "yolo-edge-test-guest"];

/// Paths of the repository and what set-up produces.
pub(crate) struct Repo {
    pub(crate) root: PathBuf,
}

pub(crate) fn step(what: &str) {
    println!("==> {what}");
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The name of the library in `dir`, installed by the `wheel` package, that starts with `prefix`.
pub(crate) fn wheel_library(dir: &Path, prefix: &str, wheel: &str) -> anyhow::Result<String> {
    std::fs::read_dir(dir)
        .with_context(|| format!("{} is missing: the {wheel} wheel did not install", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(prefix))
        .with_context(|| format!("the {wheel} wheel holds no {prefix}*"))
}

/// Make `link` a symbolic link to `target` (a name in the same folder), unless it is one.
pub(crate) fn ensure_symlink(target: &str, link: &Path) -> anyhow::Result<()> {
    if std::fs::read_link(link).ok().as_deref() != Some(Path::new(target)) {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(target, link)?;
    }
    Ok(())
}

pub(crate) fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} {:?} failed ({status})", cmd.get_program(), cmd.get_args().collect::<Vec<_>>());
    }
    Ok(())
}

pub(crate) fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Repo {
    pub(crate) fn locate() -> anyhow::Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask lives in the repository")?.to_owned();
        Ok(Self { root })
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub(crate) fn python(&self) -> PathBuf {
        self.path(".cache/venv/bin/python")
    }

    pub(crate) fn component(&self) -> PathBuf {
        self.path("target/wasm32-wasip2/wasm/yolo_edge_function.wasm")
    }

    pub(crate) fn host_binary(&self) -> PathBuf {
        self.path("target/release/yolo-edge")
    }
}
