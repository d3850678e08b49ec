//! The graphs `load-by-name` can find: every model directory, loaded once at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use yolo_core::model::{METADATA_FILE, ModelMetadata, Target};

use crate::ExecutionTarget;
use crate::backend::{Demand, Graph};
use crate::onnx::{OnnxGraph, OnnxOptions};
use crate::openvino::{OpenVinoGraph, OpenVinoOptions};

/// A named, loaded graph.
pub struct NamedGraph {
    /// The model's name (its directory name).
    pub name: String,
    /// The graph, shared by all stores.
    pub graph: Arc<dyn Graph>,
}

/// Which inference engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// ONNX Runtime (`model.onnx`).
    OnnxRuntime,
    /// OpenVINO (`model.xml` + `model.bin`, the IR set-up produces).
    OpenVino,
}

impl BackendKind {
    /// Parse a metadata or command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "onnxruntime" | "onnx" | "ort" => Some(Self::OnnxRuntime),
            "openvino" => Some(Self::OpenVino),
            _ => None,
        }
    }
}

/// How graphs are built.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    /// ONNX Runtime sessions.
    pub onnx: OnnxOptions,
    /// OpenVINO compilation.
    pub openvino: OpenVinoOptions,
    /// Run every model on this backend, whatever its metadata says.
    pub force: Option<BackendKind>,
}

impl Default for OpenVinoOptions {
    /// One throughput stream per core and a latency compilation using every core.
    fn default() -> Self {
        let onnx = OnnxOptions::default();
        Self { requests: onnx.sessions, threads: onnx.threads, precision: None, demand: onnx.demand }
    }
}

impl BackendOptions {
    /// Make every backend read the same count of invocations in flight (the host enters
    /// it for each invocation, see [`GraphRegistry::demand`]).
    pub fn share_demand(&mut self) {
        self.openvino.demand = self.onnx.demand.clone();
    }
}

/// Graphs by name, shared by every store.
#[derive(Default)]
pub struct GraphRegistry {
    graphs: BTreeMap<String, (Arc<dyn Graph>, BackendKind)>,
    options: BackendOptions,
}

impl GraphRegistry {
    /// An empty registry; `load` from bytes still works.
    pub fn new(mut options: BackendOptions) -> Self {
        options.share_demand();
        Self { graphs: BTreeMap::new(), options }
    }

    /// The count of invocations in flight that every graph adapts its threading to: the
    /// host enters it once per invocation.
    pub fn demand(&self) -> &Demand {
        &self.options.onnx.demand
    }

    /// The backend a model runs on: `force`, else its metadata's `backend`, else ONNX Runtime.
    pub fn backend_for(meta: &ModelMetadata, options: &BackendOptions) -> anyhow::Result<BackendKind> {
        if let Some(kind) = options.force {
            return Ok(kind);
        }
        match &meta.backend {
            None => Ok(BackendKind::OnnxRuntime),
            Some(name) => BackendKind::parse(name).ok_or_else(|| {
                anyhow::anyhow!("model {}: unknown backend {name:?} (onnxruntime, openvino)", meta.name)
            }),
        }
    }

    /// Load every `<dir>/<name>/` that holds a `metadata.json` (and the model files its
    /// backend needs). `open_openvino` is called before the first OpenVINO model.
    pub fn load_dir(
        dir: &Path,
        options: BackendOptions,
        open_openvino: &dyn Fn() -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let mut registry = Self::new(options);
        let options = registry.options.clone();
        let onnx = &options.onnx;
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read the models directory {}", dir.display()))?;
        let mut dirs: Vec<_> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join(METADATA_FILE).is_file()).collect();
        dirs.sort();
        for path in dirs {
            let meta = ModelMetadata::parse(&std::fs::read(path.join(METADATA_FILE))?)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
            let name =
                path.file_name().and_then(|n| n.to_str()).context("model directory names must be UTF-8")?.to_owned();
            if meta.format != "onnx" {
                tracing::warn!(model = %name, format = %meta.format, "skipping a model whose format this host has no backend for");
                continue;
            }
            let started = Instant::now();
            let target = match meta.target {
                Target::Cpu => ExecutionTarget::Cpu,
                Target::Gpu => ExecutionTarget::Gpu,
                Target::Tpu => ExecutionTarget::Tpu,
            };
            let kind = Self::backend_for(&meta, &options)?;
            let graph: Arc<dyn Graph> = match kind {
                BackendKind::OnnxRuntime => Arc::new(
                    OnnxGraph::from_file(&path.join("model.onnx"), target, onnx)
                        .map_err(|e| anyhow::anyhow!("model {name}: {e}"))?,
                ),
                BackendKind::OpenVino => {
                    open_openvino()?;
                    Arc::new(
                        OpenVinoGraph::from_dir(&path, target, &options.openvino)
                            .map_err(|e| anyhow::anyhow!("model {name}: {e}"))?,
                    )
                }
            };
            tracing::info!(
                model = %name,
                backend = ?kind,
                sessions = onnx.sessions,
                session_threads = onnx.session_threads,
                threads = onnx.threads,
                load_ms = started.elapsed().as_millis() as u64,
                "model loaded"
            );
            registry.graphs.insert(name, (graph, kind));
        }
        Ok(registry)
    }

    /// The graph called `name`.
    pub fn get(&self, name: &str) -> Option<NamedGraph> {
        self.graphs.get(name).map(|(g, _)| NamedGraph { name: name.to_owned(), graph: g.clone() })
    }

    /// Names of all loaded graphs.
    pub fn names(&self) -> Vec<String> {
        self.graphs.keys().cloned().collect()
    }

    /// Settings for graphs loaded from bytes.
    pub fn options(&self) -> &BackendOptions {
        &self.options
    }

    /// The backend of a loaded graph.
    pub fn backend_of(&self, name: &str) -> Option<BackendKind> {
        self.graphs.get(name).map(|(_, k)| *k)
    }
}
