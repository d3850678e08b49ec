//! The bare pipeline: the same decode, letterbox, inference and NMS as the function, as
//! native Rust calling ONNX Runtime in-process (the host's own ONNX backend). The limit
//! yolo-edge measures itself against.

use std::path::Path;
use std::time::Duration;

use yolo_core::decode::{DecodeLimits, decode_rgb_for_input};
use yolo_core::letterbox::{f32_from_le_bytes, letterbox_reduced_le_bytes};
use yolo_core::model::{Labels, ModelMetadata};
use yolo_core::options::{DecodeMode, DetectOptions};
use yolo_core::postprocess::detections;
use yolo_core::response::Detection;
use yolo_edge_nn::backend::{Cancel, Demand, Graph, Tensor};
use yolo_edge_nn::onnx::{OnnxGraph, OnnxOptions};
use yolo_edge_nn::openvino::{OpenVinoGraph, OpenVinoOptions};
use yolo_edge_nn::{ExecutionTarget, TensorType};

use crate::stats::closed_loop;

/// A loaded model ready to run the whole pipeline natively.
pub struct Bare {
    graph: Box<dyn Graph>,
    /// Pipelines in flight: the graph adapts its threading to it, as in the host.
    demand: Demand,
    meta: ModelMetadata,
    labels: Labels,
}

/// One run: the answer and the time spent inside inference.
pub struct Run {
    /// Detections.
    pub detections: Vec<Detection>,
    /// Inference time.
    pub inference: Duration,
}

impl Bare {
    /// Load `dir` on ONNX Runtime with the host's adaptive threading: `sessions`
    /// single-threaded sessions, and a latency session of `threads` threads (none when 1).
    pub fn load(dir: &Path, sessions: usize, threads: usize) -> anyhow::Result<Self> {
        let meta = ModelMetadata::parse(&std::fs::read(dir.join("metadata.json"))?).map_err(anyhow::Error::msg)?;
        let labels = Labels::parse(&std::fs::read_to_string(dir.join(&meta.labels))?, meta.output.classes)
            .map_err(anyhow::Error::msg)?;
        let demand = Demand::default();
        let options = OnnxOptions { sessions, session_threads: 1, threads, demand: demand.clone() };
        let graph = OnnxGraph::from_file(&dir.join("model.onnx"), ExecutionTarget::Cpu, &options)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { graph: Box::new(graph), demand, meta, labels })
    }

    /// Load `dir`'s OpenVINO IR with `requests` throughput infer requests (streams) and a
    /// latency compilation of `threads` threads (none when 1).
    pub fn load_openvino(dir: &Path, requests: usize, threads: usize) -> anyhow::Result<Self> {
        let onnx = Self::load(dir, 1, 1)?;
        let options = OpenVinoOptions { requests, threads, precision: None, demand: onnx.demand.clone() };
        let graph = OpenVinoGraph::from_dir(dir, ExecutionTarget::Cpu, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { graph: Box::new(graph), ..onnx })
    }

    /// Decode, letterbox, infer, post-process.
    pub fn run(&self, image: &[u8]) -> anyhow::Result<Run> {
        let _demand = self.demand.enter();
        let m = &self.meta;
        // The function's own steps, with its default options.
        let input = (m.input.width, m.input.height);
        let img = decode_rgb_for_input(image, DecodeLimits::default(), input, DecodeMode::default())
            .map_err(anyhow::Error::msg)?;
        let (data, geometry) = letterbox_reduced_le_bytes(
            &img.image,
            (img.width, img.height),
            m.input.width,
            m.input.height,
            m.letterbox.color,
        );
        let input = Tensor { dims: vec![1, 3, m.input.height, m.input.width], ty: TensorType::Fp32, data };
        let computed = self
            .graph
            .compute(vec![(m.input.name.clone(), input)], &Cancel::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (_, out) = computed
            .outputs
            .into_iter()
            .find(|(n, _)| *n == m.output.name)
            .ok_or_else(|| anyhow::anyhow!("no output"))?;
        let data = f32_from_le_bytes(&out.data);
        let found = detections(m.output.layout, &data, &out.dims, &self.labels, &geometry, &DetectOptions::default())
            .map_err(anyhow::Error::msg)?;
        Ok(Run { detections: found, inference: computed.inference })
    }

    /// Pipelines per second with `threads` threads for `duration`.
    pub fn throughput(&self, image: &[u8], threads: usize, duration: Duration) -> f64 {
        closed_loop(threads, duration, || (), |()| self.run(image).is_ok()).0
    }
}
