//! yolo-edge's host: serves the detection component over HTTP with Wasmtime, provides
//! wasi-nn on ONNX Runtime, and meters every invocation.
//!
//! A request goes [`server`] (body limit) → [`invoke`] (a fresh instance from the
//! [`engine`]'s pre-instantiated component, with [`state`] for WASI, wasi-http and [`nn`])
//! → the function → back through [`invoke`] (fuel, wall time, inference time, memory:
//! [`metering`]) → [`server`] (metering headers, one log line). [`cli`] wires it together.
#![deny(missing_docs)]

pub mod cli;
pub mod engine;
pub mod invoke;
pub mod metering;
pub mod nn;
pub mod server;
pub mod state;
