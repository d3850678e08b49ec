//! Image and YOLO logic shared by every part of yolo-edge.
//!
//! This crate is plain Rust with no I/O of its own: it compiles for `wasm32-wasip2` (the
//! function) and for the native host, the benchmark's native baseline and the tests, so the
//! detection pipeline is written once. The request flows through it in this order:
//!
//! 1. [`request`]: parse the HTTP body (JSON with base64, or raw image bytes) and the
//!    [`options`] into a [`request::DetectRequest`];
//! 2. [`decode`]: decode the image bytes (PNG, JPEG, WebP) into RGB, honouring EXIF
//!    orientation and refusing decompression bombs before allocating them;
//! 3. [`letterbox`]: resize keeping the aspect ratio ([`resize`]: Pillow-exact bilinear), centre on
//!    the model's padding colour, and lay out an NCHW `f32` tensor;
//! 4. (inference happens elsewhere: wasi-nn in the function, ONNX Runtime in the baseline);
//! 5. [`postprocess`]: decode the model output ([`model::OutputLayout`]), filter, run
//!    class-wise NMS and map the boxes back to the original image;
//! 6. [`response`]: the JSON answer, and [`error::ApiError`] for every failure.
#![deny(missing_docs)]

pub mod batch;
pub mod decode;
pub mod error;
pub mod letterbox;
pub mod model;
pub mod options;
pub mod postprocess;
pub mod report;
pub mod request;
pub mod resize;
pub mod response;

pub use error::{ApiError, ErrorCode};
