//! `yolo-edge-nn`: the host's wasi-nn (`wasi:nn@0.2.0-rc-2024-10-28`), in the shape of `wasmtime-wasi-http`:
//! an [`NnCtx`] per store, a borrowed [`NnView`] that implements the generated `Host`
//! traits, and [`add_to_linker`].
//!
//! Why not `wasmtime-wasi-nn`'s own implementation: its ONNX backend serialises every
//! inference on a model behind one `Mutex`, and it cannot tell the host how long an
//! invocation spent inside inference. Here graphs come from a [`registry::GraphRegistry`]
//! loaded once at start and shared by all stores; each graph is a [`backend::Graph`] (ONNX
//! Runtime keeps a pool of sessions so inferences run in parallel), and every `compute`
//! runs on the blocking thread pool and adds its duration to the store's [`NnMeter`].
//!
//! Lifecycle: [`registry::GraphRegistry::load_dir`] at start → [`NnCtx::new`] per store →
//! guest calls `load-by-name` / `init-execution-context` / `compute` → the store drops and
//! [`NnCtx::meter`] tells what inference cost.

#![deny(missing_docs)]

pub mod backend;
mod bindings;
mod host;
pub mod import;
pub mod onnx;
pub mod openvino;
pub mod registry;
mod resources;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Linker, ResourceTable};

pub use self::bindings::wasi::nn::errors::ErrorCode;
pub use self::bindings::wasi::nn::graph::{ExecutionTarget, GraphEncoding};
pub use self::bindings::wasi::nn::tensor::TensorType;
use self::registry::GraphRegistry;

/// What inference cost one store so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NnMeter {
    /// Number of `compute` calls.
    pub computes: u32,
    /// Time spent running the backend, summed over `compute` calls.
    pub inference: Duration,
    /// Time spent waiting for a free backend session.
    pub queued: Duration,
}

/// Per-store wasi-nn state.
pub struct NnCtx {
    registry: Arc<GraphRegistry>,
    meter: NnMeter,
    timeout: Duration,
}

impl NnCtx {
    /// A context that resolves `load-by-name` through `registry` and stops any `compute`
    /// that runs longer than `timeout`.
    pub fn new(registry: Arc<GraphRegistry>, timeout: Duration) -> Self {
        Self { registry, meter: NnMeter::default(), timeout }
    }

    /// What this store's inferences cost so far.
    pub fn meter(&self) -> NnMeter {
        self.meter
    }
}

/// A borrowed view of a store's wasi-nn state and resource table.
pub struct NnView<'a> {
    /// The wasi-nn state.
    pub ctx: &'a mut NnCtx,
    /// The store's resource table (shared with WASI and wasi-http).
    pub table: &'a mut ResourceTable,
}

struct HasNn;

impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

/// Add the wasi-nn interfaces to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> NnView<'_>,
) -> wasmtime::Result<()> {
    bindings::wasi::nn::graph::add_to_linker::<T, HasNn>(linker, view)?;
    bindings::wasi::nn::tensor::add_to_linker::<T, HasNn>(linker, view)?;
    bindings::wasi::nn::inference::add_to_linker::<T, HasNn>(linker, view)?;
    bindings::wasi::nn::errors::add_to_linker::<T, HasNn>(linker, view)?;
    Ok(())
}
