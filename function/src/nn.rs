//! Running a graph through the wasi-nn imports (`wasi:nn@0.2.0-rc-2024-10-28`).

use yolo_core::letterbox::f32_from_le_bytes;
use yolo_core::{ApiError, ErrorCode};

spin_sdk::wit_bindgen::generate!({
    world: "detector",
    path: "../wit",
    runtime_path: "spin_sdk::wit_bindgen::rt",
    generate_all,
});

use wasi::nn::errors::{Error, ErrorCode as NnCode};
use wasi::nn::graph::load_by_name;
use wasi::nn::tensor::{Tensor, TensorType};

/// An `f32` output tensor.
pub struct Output {
    /// Its dimensions.
    pub dims: Vec<u32>,
    /// Its values.
    pub data: Vec<f32>,
}

fn nn_error(what: &str, model: &str, e: Error) -> ApiError {
    let code = e.code();
    let status = match code {
        NnCode::NotFound => ErrorCode::ModelNotFound,
        NnCode::Timeout => ErrorCode::InferenceTimeout,
        _ => ErrorCode::InferenceFailed,
    };
    ApiError::new(status, format!("wasi-nn {what} failed for model {model:?} ({code:?}): {}", e.data()))
}

/// Load `model` by name, feed `input` as the tensor `input_name` and return `output_name`.
pub fn infer(
    model: &str,
    input_name: &str,
    dims: &[u32],
    input: Vec<u8>,
    output_name: &str,
) -> Result<Output, ApiError> {
    let graph = load_by_name(model).map_err(|e| nn_error("load-by-name", model, e))?;
    let context = graph.init_execution_context().map_err(|e| nn_error("init-execution-context", model, e))?;
    let tensor = Tensor::new(dims, TensorType::Fp32, &input);
    drop(input);
    let outputs = context.compute(vec![(input_name.to_owned(), tensor)]).map_err(|e| nn_error("compute", model, e))?;
    let (_, tensor) = outputs.into_iter().find(|(name, _)| name == output_name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelInvalid,
            format!("model {model:?} returned no output tensor named {output_name:?}"),
        )
    })?;
    if tensor.ty() != TensorType::Fp32 {
        return Err(ApiError::new(
            ErrorCode::ModelInvalid,
            format!("output {output_name:?} of model {model:?} is {:?}, expected FP32", tensor.ty()),
        ));
    }
    Ok(Output { dims: tensor.dimensions(), data: f32_from_le_bytes(&tensor.data()) })
}
