//! The ONNX Runtime backend (through the `ort` crate, ONNX Runtime opened at run time).
//!
//! `ort` 2.0.0-rc.10's `Session::run` takes `&mut self`, so one session serves one inference
//! at a time. A graph therefore owns sessions of two widths ([`Adaptive`]): one *latency*
//! session whose intra-op pool has the whole thread budget (default: every core), used by an
//! inference that runs alone, and a pool of *throughput* sessions of one thread each, used
//! while other invocations are in flight. One request alone so gets every core; a loaded
//! host runs one single-threaded inference per core, which keeps every core busy without
//! oversubscription (measured in `cargo xtask bench`, BENCHMARKS.md).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ort::execution_providers::ExecutionProviderDispatch;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::tensor::{PrimitiveTensorElementType, TensorElementType};
use ort::value::{DynValue, Tensor as OrtTensor, TensorRef, ValueType};

use crate::backend::{Adaptive, BackendError, Cancel, Computed, Demand, Graph, Tensor, find_library};
use crate::{ErrorCode, ExecutionTarget, TensorType};

/// The file name ONNX Runtime's shared library is looked up under.
pub const LIBRARY_NAME: &str = "libonnxruntime.so";

/// ONNX Runtime's session option that parks the intra-op workers when a run ends.
const FORCE_SPINNING_STOP: &str = "session.force_spinning_stop";

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How to build sessions for a graph.
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    /// Throughput sessions per graph (concurrent inferences under load).
    pub sessions: usize,
    /// Intra-op threads of each throughput session.
    pub session_threads: usize,
    /// The thread budget of an inference that runs alone: the latency session's intra-op
    /// threads (none is built when this is not above `session_threads`).
    pub threads: usize,
    /// The host's invocations in flight, which picks the session width.
    pub demand: Demand,
}

impl Default for OnnxOptions {
    /// One single-threaded session per core, and a latency session using every core.
    fn default() -> Self {
        Self { sessions: cores(), session_threads: 1, threads: cores(), demand: Demand::default() }
    }
}

static RUNTIME: OnceLock<PathBuf> = OnceLock::new();

/// Open ONNX Runtime (once per process) and return the library path it was opened from.
pub fn init_runtime(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = RUNTIME.get() {
        return Ok(path.clone());
    }
    // Next to the binary, else where `cargo xtask` laid out the onnxruntime wheel's library.
    let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/onnxruntime/lib");
    let path = find_library(explicit, LIBRARY_NAME, fallback, "ONNX Runtime", "--onnxruntime")?;
    let path = path.canonicalize().unwrap_or(path);
    let display = path.display().to_string();
    // `ort` panics when the library cannot be opened; turn that into an error.
    let committed = std::panic::catch_unwind(|| ort::init_from(display.clone()).with_name("yolo-edge").commit())
        .map_err(|_| anyhow::anyhow!("ONNX Runtime could not be opened from {display}"))?;
    committed.map_err(|e| anyhow::anyhow!("ONNX Runtime from {display} failed to initialise: {e}"))?;
    Ok(RUNTIME.get_or_init(|| path).clone())
}

/// The execution providers for a wasi-nn execution target. The GPU needs the `cuda` cargo
/// feature and an ONNX Runtime built with CUDA (e.g. the `onnxruntime-gpu` wheel's library,
/// passed with `--onnxruntime`); it never falls back to the CPU silently.
fn execution_providers(target: ExecutionTarget) -> Result<Vec<ExecutionProviderDispatch>, BackendError> {
    match target {
        ExecutionTarget::Cpu => Ok(Vec::new()),
        #[cfg(feature = "cuda")]
        ExecutionTarget::Gpu => {
            Ok(vec![ort::execution_providers::CUDAExecutionProvider::default().build().error_on_failure()])
        }
        #[cfg(not(feature = "cuda"))]
        ExecutionTarget::Gpu => Err(BackendError::new(
            ErrorCode::UnsupportedOperation,
            "execution target gpu is not available: this yolo-edge was built without the `cuda` feature",
        )),
        ExecutionTarget::Tpu => {
            Err(BackendError::new(ErrorCode::UnsupportedOperation, "execution target tpu is not supported"))
        }
    }
}

// wasi-nn tensor data is little-endian; the conversions below copy it as it is.
const _: () = assert!(cfg!(target_endian = "little"), "the ONNX backend assumes a little-endian host");

fn ort_error(context: &str, e: ort::Error) -> BackendError {
    BackendError::new(ErrorCode::RuntimeError, format!("ONNX Runtime {context}: {e}"))
}

/// A graph on ONNX Runtime with sessions of two widths.
pub struct OnnxGraph {
    inputs: Vec<String>,
    outputs: Vec<String>,
    sessions: Adaptive<Session>,
}

impl OnnxGraph {
    /// Build the sessions `options` asks for from an ONNX model's bytes.
    pub fn from_bytes(model: &[u8], target: ExecutionTarget, options: &OnnxOptions) -> Result<Self, BackendError> {
        let providers = execution_providers(target)?;
        let build = |threads: usize| {
            Session::builder()
                .and_then(|b| b.with_execution_providers(providers.clone()))
                .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
                .and_then(|b| b.with_intra_threads(threads.max(1)))
                // A wide session's workers spin while a run lasts (woken from sleep for each
                // of the graph's parallel sections instead, a run took 40 ms, not 29 ms, with
                // onnxruntime 1.32 here) and park when it ends: by default they would spin
                // ~40 ms more, taking a core from the guest work of the next requests.
                .and_then(|b| if threads > 1 { b.with_config_entry(FORCE_SPINNING_STOP, "1") } else { Ok(b) })
                .and_then(|b| b.with_inter_threads(1))
                .and_then(|b| b.commit_from_memory(model))
                .map_err(|e| {
                    let code = if target == ExecutionTarget::Cpu {
                        ErrorCode::InvalidEncoding
                    } else {
                        ErrorCode::UnsupportedOperation
                    };
                    BackendError::new(code, format!("ONNX Runtime cannot load the model for {target:?}: {e}"))
                })
        };
        let narrow = options.session_threads.max(1);
        let mut widths = vec![narrow; options.sessions.max(1)];
        let wide = options.threads > narrow;
        if wide {
            widths.push(options.threads);
        }
        // Sessions are independent: build them in parallel (start-up time).
        let mut sessions = std::thread::scope(|s| {
            let handles: Vec<_> = widths.iter().map(|&w| s.spawn(move || build(w))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(BackendError::new(ErrorCode::RuntimeError, "building an ONNX Runtime session panicked"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })?;
        let latency = if wide { sessions.pop() } else { None };
        let inputs = sessions[0].inputs.iter().map(|i| i.name.clone()).collect();
        let outputs = sessions[0].outputs.iter().map(|o| o.name.clone()).collect();
        Ok(Self { inputs, outputs, sessions: Adaptive::new(latency, sessions, options.demand.clone()) })
    }

    /// Read `path` (an `.onnx` file) and build the graph.
    pub fn from_file(path: &Path, target: ExecutionTarget, options: &OnnxOptions) -> Result<Self, BackendError> {
        let bytes = std::fs::read(path)
            .map_err(|e| BackendError::new(ErrorCode::NotFound, format!("cannot read {}: {e}", path.display())))?;
        Self::from_bytes(&bytes, target, options)
    }

    /// The graph's input names.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    fn input_index(&self, name: &str) -> Result<usize, BackendError> {
        self.inputs
            .iter()
            .position(|n| n == name)
            .or_else(|| name.parse::<usize>().ok().filter(|&i| i < self.inputs.len()))
            .ok_or_else(|| {
                BackendError::new(
                    ErrorCode::InvalidArgument,
                    format!("the graph has no input {name:?}; its inputs are {:?}", self.inputs),
                )
            })
    }
}

/// `tensor` as an ONNX Runtime input: a view of its bytes, no copy (wasi-nn's little-endian
/// bytes are this host's own, and the allocator aligns a tensor's buffer for any element
/// type; a misaligned one is copied).
fn to_ort(tensor: &Tensor) -> Result<SessionInputValue<'_>, BackendError> {
    tensor.validate()?;
    let shape: Vec<i64> = tensor.dims.iter().map(|&d| i64::from(d)).collect();
    let data = &tensor.data;
    let value = match tensor.ty {
        TensorType::Fp32 => input_view::<f32>(shape, data),
        TensorType::Fp64 => input_view::<f64>(shape, data),
        TensorType::I32 => input_view::<i32>(shape, data),
        TensorType::I64 => input_view::<i64>(shape, data),
        TensorType::U8 => input_view::<u8>(shape, data),
        other => {
            return Err(BackendError::new(
                ErrorCode::UnsupportedOperation,
                format!("{other:?} input tensors are not supported by the ONNX backend"),
            ));
        }
    };
    value.map_err(|e| ort_error("rejected an input tensor", e))
}

/// `data` as a tensor of `T`: borrowed when aligned for `T`, else copied.
fn input_view<T: PrimitiveTensorElementType + bytemuck::Pod + Debug + Clone + 'static>(
    shape: Vec<i64>,
    data: &[u8],
) -> Result<SessionInputValue<'_>, ort::Error> {
    match bytemuck::try_cast_slice::<u8, T>(data) {
        Ok(values) => TensorRef::from_array_view((shape, values)).map(Into::into),
        Err(_) => {
            let mut values = vec![T::zeroed(); data.len() / size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut values).copy_from_slice(data);
            OrtTensor::from_array((shape, values)).map(Into::into)
        }
    }
}

fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, BackendError> {
    /// A tensor's values as wasi-nn's little-endian bytes: one copy (see [`to_ort`]).
    fn pack<T: bytemuck::Pod>((shape, data): (&ort::tensor::Shape, &[T])) -> (Vec<u32>, Vec<u8>) {
        let dims = shape.iter().map(|&d| u32::try_from(d).unwrap_or(0)).collect();
        (dims, bytemuck::cast_slice(data).to_vec())
    }
    let err = |e| ort_error(&format!("could not read output {name:?}"), e);
    let (ty, (dims, data)) = match value.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, .. } => {
            (TensorType::Fp32, pack(value.try_extract_tensor::<f32>().map_err(err)?))
        }
        ValueType::Tensor { ty: TensorElementType::Float64, .. } => {
            (TensorType::Fp64, pack(value.try_extract_tensor::<f64>().map_err(err)?))
        }
        ValueType::Tensor { ty: TensorElementType::Int32, .. } => {
            (TensorType::I32, pack(value.try_extract_tensor::<i32>().map_err(err)?))
        }
        ValueType::Tensor { ty: TensorElementType::Int64, .. } => {
            (TensorType::I64, pack(value.try_extract_tensor::<i64>().map_err(err)?))
        }
        ValueType::Tensor { ty: TensorElementType::Uint8, .. } => {
            (TensorType::U8, pack(value.try_extract_tensor::<u8>().map_err(err)?))
        }
        other => {
            return Err(BackendError::new(
                ErrorCode::UnsupportedOperation,
                format!("output {name:?} is {other:?}, which wasi-nn tensors cannot carry"),
            ));
        }
    };
    Ok(Tensor { dims, ty, data })
}

impl Graph for OnnxGraph {
    fn compute(&self, inputs: Vec<(String, Tensor)>, cancel: &Cancel) -> Result<Computed, BackendError> {
        let mut named: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (name, tensor) in &inputs {
            let index = self.input_index(name)?;
            named.push((self.inputs[index].clone(), to_ort(tensor)?));
        }
        if let Some(missing) = self.inputs.iter().find(|n| !named.iter().any(|(m, _)| m == *n)) {
            return Err(BackendError::new(
                ErrorCode::InvalidArgument,
                format!("input {missing:?} was not given; the graph's inputs are {:?}", self.inputs),
            ));
        }
        let options = Arc::new(RunOptions::new().map_err(|e| ort_error("cannot create run options", e))?);
        let stopper = options.clone();
        cancel.on_cancel(move || {
            let _ = stopper.terminate();
        });
        let waited = Instant::now();
        let mut session = self.sessions.checkout();
        let queued = waited.elapsed();
        let started = Instant::now();
        let result = session
            .run_with_options(named, &options)
            .map_err(|e| {
                if cancel.is_cancelled() {
                    BackendError::new(ErrorCode::Timeout, format!("inference was stopped at its deadline ({e})"))
                } else {
                    ort_error("inference failed", e)
                }
            })
            .and_then(|outputs| {
                let inference = started.elapsed();
                let tensors = self
                    .outputs
                    .iter()
                    .map(|name| from_ort(name, &outputs[name.as_str()]).map(|t| (name.clone(), t)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Computed { outputs: tensors, inference, queued })
            });
        drop(session);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(value: &SessionInputValue<'_>) -> Vec<f32> {
        let value: &DynValue = match value {
            SessionInputValue::View(v) => v,
            SessionInputValue::ViewMut(v) => v,
            SessionInputValue::Owned(v) => v,
        };
        value.try_extract_tensor::<f32>().expect("an f32 tensor").1.to_vec()
    }

    /// An input is read in place when its bytes are aligned, copied when they are not, and
    /// holds the same values either way.
    #[test]
    fn inputs_are_views_when_aligned_and_copies_when_not() {
        init_runtime(None).expect("ONNX Runtime (`cargo xtask setup` lays it out)");
        let want: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let aligned: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
        // The same bytes one past an allocation's (at least 8-byte aligned) start.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&aligned);
        let misaligned = &shifted[1..];
        assert_eq!(aligned.as_ptr().align_offset(4), 0);
        assert_ne!(misaligned.as_ptr().align_offset(4), 0);

        let view = input_view::<f32>(vec![3, 4], &aligned).unwrap();
        assert!(matches!(view, SessionInputValue::View(_)), "an aligned buffer is borrowed");
        assert_eq!(floats(&view), want);
        let copy = input_view::<f32>(vec![3, 4], misaligned).unwrap();
        assert!(matches!(copy, SessionInputValue::Owned(_)), "a misaligned one is copied");
        assert_eq!(floats(&copy), want);
    }
}
