//! The OpenVINO backend (the `openvino` crate, `libopenvino_c` opened at run time from the
//! `openvino` wheel that set-up installs). Loads a model's OpenVINO IR (`model.xml` +
//! `model.bin`), compiled twice like the ONNX Runtime backend's two session widths
//! ([`Adaptive`]): once with `PERFORMANCE_HINT=LATENCY` (one stream on the whole thread
//! budget) for an inference that runs alone, once with `PERFORMANCE_HINT=THROUGHPUT` and
//! one stream per requested infer request (its `OPTIMAL_NUMBER_OF_INFER_REQUESTS` is logged)
//! while other invocations are in flight.
//!
//! Precision: the CPU plugin picks it (bf16 on CPUs with AVX512-BF16 or AMX, f32 elsewhere)
//! unless `--openvino-precision f32` asks for f32. A running inference cannot be stopped
//! through the C API from another thread: past its deadline it is reported, not interrupted.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use openvino::{CompiledModel, Core, DeviceType, ElementType, InferRequest, PropertyKey, RwPropertyKey, Shape};

use crate::backend::{Adaptive, BackendError, Cancel, Computed, Demand, Graph, Tensor, find_library};
use crate::{ErrorCode, ExecutionTarget, TensorType};

/// The library the `openvino` crate opens.
pub const LIBRARY_NAME: &str = "libopenvino_c.so";

/// How to compile a graph.
#[derive(Debug, Clone)]
pub struct OpenVinoOptions {
    /// Throughput infer requests (and CPU streams): concurrent inferences under load.
    pub requests: usize,
    /// The thread budget of an inference that runs alone (the latency compilation's
    /// `INFERENCE_NUM_THREADS`); none is compiled when this is 1.
    pub threads: usize,
    /// `INFERENCE_PRECISION_HINT` (`f32`, `bf16`), or the plugin's default.
    pub precision: Option<String>,
    /// The host's invocations in flight, which picks the compilation.
    pub demand: Demand,
}

static LOADED: OnceLock<PathBuf> = OnceLock::new();

/// Open OpenVINO (once per process); the library path it came from.
pub fn init_runtime(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = LOADED.get() {
        return Ok(path.clone());
    }
    // Next to the binary, else in the set-up venv's `openvino` wheel (its `libs/` folder,
    // where the CPU plugin it loads also lives).
    let fallback =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/venv/lib/python3.11/site-packages/openvino/libs");
    let path = find_library(explicit, LIBRARY_NAME, fallback, "OpenVINO", "--openvino")?;
    openvino_sys::library::load_from(path.clone())
        .map_err(|e| anyhow::anyhow!("OpenVINO could not be opened from {}: {e}", path.display()))?;
    Ok(LOADED.get_or_init(|| path).clone())
}

/// Whether OpenVINO was opened in this process.
pub fn runtime_loaded() -> bool {
    LOADED.get().is_some()
}

fn ov_error(context: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::new(ErrorCode::RuntimeError, format!("OpenVINO {context}: {e}"))
}

fn element_type(ty: TensorType) -> Option<ElementType> {
    Some(match ty {
        TensorType::Fp32 => ElementType::F32,
        TensorType::Fp64 => ElementType::F64,
        TensorType::Fp16 => ElementType::F16,
        TensorType::Bf16 => ElementType::Bf16,
        TensorType::I32 => ElementType::I32,
        TensorType::I64 => ElementType::I64,
        TensorType::U8 => ElementType::U8,
    })
}

fn tensor_type(ty: ElementType) -> Option<TensorType> {
    Some(match ty {
        ElementType::F32 => TensorType::Fp32,
        ElementType::F64 => TensorType::Fp64,
        ElementType::F16 => TensorType::Fp16,
        ElementType::Bf16 => TensorType::Bf16,
        ElementType::I32 => TensorType::I32,
        ElementType::I64 => TensorType::I64,
        ElementType::U8 => TensorType::U8,
        _ => return None,
    })
}

/// A graph compiled by OpenVINO for latency and for throughput, with their infer requests.
pub struct OpenVinoGraph {
    inputs: Vec<String>,
    outputs: Vec<String>,
    requests: Adaptive<InferRequest>,
    _compiled: Mutex<Vec<CompiledModel>>,
}

impl OpenVinoGraph {
    /// Compile an IR (`xml` + `weights`) for `target`.
    pub fn from_ir(
        xml: &[u8],
        weights: &[u8],
        target: ExecutionTarget,
        options: &OpenVinoOptions,
    ) -> Result<Self, BackendError> {
        let device = match target {
            ExecutionTarget::Cpu => DeviceType::CPU,
            ExecutionTarget::Gpu => DeviceType::GPU,
            ExecutionTarget::Tpu => {
                return Err(BackendError::new(
                    ErrorCode::UnsupportedOperation,
                    "execution target tpu is not supported",
                ));
            }
        };
        let mut core = Core::new().map_err(|e| ov_error("cannot start", e))?;
        let weights =
            openvino::Tensor::new(ElementType::U8, &Shape::new(&[weights.len() as i64]).map_err(|e| ov_error("", e))?)
                .and_then(|mut t| {
                    t.get_raw_data_mut()?.copy_from_slice(weights);
                    Ok(t)
                })
                .map_err(|e| ov_error("cannot hold the weights", e))?;
        let xml = std::str::from_utf8(xml)
            .map_err(|_| BackendError::new(ErrorCode::InvalidEncoding, "the OpenVINO IR is not UTF-8 XML"))?;
        let model = core
            .read_model_from_buffer(xml.as_bytes(), Some(&weights))
            .map_err(|e| BackendError::new(ErrorCode::InvalidEncoding, format!("OpenVINO cannot read the IR: {e}")))?;
        let name = |n: Result<openvino::Node, openvino::InferenceError>| n.and_then(|n| n.get_name());
        let inputs = (0..model.get_inputs_len().map_err(|e| ov_error("", e))?)
            .map(|i| name(model.get_input_by_index(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ov_error("cannot read the inputs", e))?;
        let outputs = (0..model.get_outputs_len().map_err(|e| ov_error("", e))?)
            .map(|i| name(model.get_output_by_index(i)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ov_error("cannot read the outputs", e))?;
        // `compile_model` passes no properties in openvino 0.11: set them on the core first.
        let mut compile = |hint: &str, streams: usize, threads: usize| {
            let streams = streams.to_string();
            let threads = threads.to_string();
            let mut properties = vec![
                (RwPropertyKey::HintPerformanceMode, hint),
                (RwPropertyKey::NumStreams, streams.as_str()),
                (RwPropertyKey::HintNumRequests, streams.as_str()),
            ];
            if threads != "0" {
                properties.push((RwPropertyKey::InferenceNumThreads, threads.as_str()));
            }
            if let Some(p) = &options.precision {
                properties.push((RwPropertyKey::HintInferencePrecision, p.as_str()));
            }
            core.set_properties(&device, properties).map_err(|e| ov_error("rejected a setting", e))?;
            core.compile_model(&model, device.to_owned()).map_err(|e| {
                BackendError::new(
                    ErrorCode::UnsupportedOperation,
                    format!("OpenVINO cannot compile the model for {target:?}: {e}"),
                )
            })
        };
        let requests = options.requests.max(1);
        let mut throughput = compile("THROUGHPUT", requests, 0)?;
        let optimal = throughput.get_property(&PropertyKey::OptimalNumberOfInferRequests).map(|v| v.into_owned());
        tracing::debug!(requests, optimal = ?optimal.ok(), "OpenVINO throughput compilation");
        let narrow = (0..requests)
            .map(|_| throughput.create_infer_request())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ov_error("cannot create infer requests", e))?;
        let mut compiled = vec![throughput];
        let wide = if options.threads > 1 {
            let mut latency = compile("LATENCY", 1, options.threads)?;
            let request = latency.create_infer_request().map_err(|e| ov_error("cannot create an infer request", e))?;
            compiled.push(latency);
            Some(request)
        } else {
            None
        };
        Ok(Self {
            inputs,
            outputs,
            requests: Adaptive::new(wide, narrow, options.demand.clone()),
            _compiled: Mutex::new(compiled),
        })
    }

    /// Read `model.xml` and `model.bin` from `dir` and compile them.
    pub fn from_dir(dir: &Path, target: ExecutionTarget, options: &OpenVinoOptions) -> Result<Self, BackendError> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| {
                BackendError::new(
                    ErrorCode::NotFound,
                    format!(
                        "cannot read {}: {e} (set-up converts the model to OpenVINO IR: `cargo xtask run`)",
                        dir.join(name).display()
                    ),
                )
            })
        };
        Self::from_ir(&read("model.xml")?, &read("model.bin")?, target, options)
    }

    fn run(
        &self,
        request: &mut InferRequest,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, BackendError> {
        for (name, t) in inputs {
            t.validate()?;
            let name = self
                .inputs
                .iter()
                .find(|n| **n == name)
                .or_else(|| name.parse::<usize>().ok().and_then(|i| self.inputs.get(i)))
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorCode::InvalidArgument,
                        format!("the graph has no input {name:?}; its inputs are {:?}", self.inputs),
                    )
                })?;
            let ty = element_type(t.ty)
                .ok_or_else(|| BackendError::new(ErrorCode::UnsupportedOperation, "unsupported tensor type"))?;
            let dims: Vec<i64> = t.dims.iter().map(|&d| i64::from(d)).collect();
            let mut tensor = openvino::Tensor::new(ty, &Shape::new(&dims).map_err(|e| ov_error("bad shape", e))?)
                .map_err(|e| ov_error("cannot make an input tensor", e))?;
            tensor.get_raw_data_mut().map_err(|e| ov_error("", e))?.copy_from_slice(&t.data);
            request.set_tensor(name, &tensor).map_err(|e| {
                BackendError::new(ErrorCode::InvalidArgument, format!("OpenVINO refused input {name:?}: {e}"))
            })?;
        }
        request.infer().map_err(|e| ov_error("inference failed", e))?;
        self.outputs
            .iter()
            .map(|name| {
                let t = request.get_tensor(name).map_err(|e| ov_error("cannot read an output", e))?;
                let ty = t.get_element_type().ok().and_then(tensor_type).ok_or_else(|| {
                    BackendError::new(
                        ErrorCode::UnsupportedOperation,
                        format!("output {name:?} has an unsupported type"),
                    )
                })?;
                let shape = t.get_shape().map_err(|e| ov_error("", e))?;
                let dims = shape.get_dimensions().iter().map(|&d| u32::try_from(d).unwrap_or(0)).collect();
                let data = t.get_raw_data().map_err(|e| ov_error("", e))?.to_vec();
                Ok((name.clone(), Tensor { dims, ty, data }))
            })
            .collect()
    }
}

impl Graph for OpenVinoGraph {
    fn compute(&self, inputs: Vec<(String, Tensor)>, _cancel: &Cancel) -> Result<Computed, BackendError> {
        let waited = Instant::now();
        let mut request = self.requests.checkout();
        let queued = waited.elapsed();
        let started = Instant::now();
        let result = self.run(&mut request, inputs);
        let inference = started.elapsed();
        drop(request);
        Ok(Computed { outputs: result?, inference, queued })
    }
}
