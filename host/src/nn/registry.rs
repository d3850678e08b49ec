//! The graphs `load-by-name` can find: every model directory, loaded once at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use yolo_core::model::{METADATA_FILE, ModelMetadata, Target};

use super::ExecutionTarget;
use super::backend::Graph;
use super::onnx::{OnnxGraph, OnnxOptions};

/// A named, loaded graph.
pub struct NamedGraph {
    /// The model's name (its directory name).
    pub name: String,
    /// The graph, shared by all stores.
    pub graph: Arc<dyn Graph>,
}

/// Graphs by name, shared by every store.
#[derive(Default)]
pub struct GraphRegistry {
    graphs: BTreeMap<String, Arc<dyn Graph>>,
    onnx: OnnxOptions,
}

impl GraphRegistry {
    /// An empty registry; `load` from bytes still works.
    pub fn new(onnx: OnnxOptions) -> Self {
        Self { graphs: BTreeMap::new(), onnx }
    }

    /// Load every `<dir>/<name>/` that holds a `metadata.json` and a `model.onnx`.
    pub fn load_dir(dir: &Path, onnx: OnnxOptions) -> anyhow::Result<Self> {
        let mut registry = Self::new(onnx);
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
            let graph = OnnxGraph::from_file(&path.join("model.onnx"), target, onnx)
                .map_err(|e| anyhow::anyhow!("model {name}: {e}"))?;
            tracing::info!(
                model = %name,
                sessions = onnx.sessions,
                threads = onnx.threads,
                load_ms = started.elapsed().as_millis() as u64,
                "model loaded"
            );
            registry.graphs.insert(name, Arc::new(graph));
        }
        Ok(registry)
    }

    /// The graph called `name`.
    pub fn get(&self, name: &str) -> Option<NamedGraph> {
        self.graphs.get(name).map(|g| NamedGraph { name: name.to_owned(), graph: g.clone() })
    }

    /// Names of all loaded graphs.
    pub fn names(&self) -> Vec<String> {
        self.graphs.keys().cloned().collect()
    }

    /// Session settings for graphs loaded from bytes.
    pub fn onnx_options(&self) -> OnnxOptions {
        self.onnx
    }
}
