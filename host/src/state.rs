//! The data of one store (one invocation): WASI, wasi-http, wasi-nn, and the memory meter.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use yolo_edge_nn::registry::GraphRegistry;
use yolo_edge_nn::{NnCtx, NnView};

/// Where the models directory appears inside the guest.
pub const GUEST_MODELS_DIR: &str = "/models";

/// Caps and records linear memory and table growth of one store.
#[derive(Debug, Clone)]
pub struct MemoryMeter {
    cap: usize,
    peak: usize,
    refused: Option<usize>,
}

impl MemoryMeter {
    /// A meter that refuses growth beyond `cap` bytes per linear memory.
    pub fn new(cap: usize) -> Self {
        Self { cap, peak: 0, refused: None }
    }

    /// The cap, in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The largest size a linear memory asked to grow to over the cap, if any (the guest then
    /// usually aborts: Rust's allocator treats a refused `memory.grow` as out of memory).
    /// A growth refused only by the module's own declared maximum is not counted here.
    pub fn refused(&self) -> Option<usize> {
        self.refused
    }

    /// The largest size any linear memory of the store reached, in bytes.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl wasmtime::ResourceLimiter for MemoryMeter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.cap && maximum.is_none_or(|m| desired <= m);
        if allowed {
            self.peak = self.peak.max(desired);
        } else if desired > self.cap {
            self.refused = Some(self.refused.unwrap_or(0).max(desired));
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

/// wasi-http hooks that refuse every outgoing request: the function needs no network.
#[derive(Debug, Default)]
pub struct NoOutgoingHttp;

type WasiBody = wasmtime_wasi_http::WasiBody;
type BoxedFuture<T> = Box<dyn Future<Output = T> + Send>;

impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: BoxedFuture<Result<(), wasmtime_wasi_http::Error>>,
    ) -> BoxedFuture<
        wasmtime_wasi_http::Result<(http::Response<WasiBody>, BoxedFuture<Result<(), wasmtime_wasi_http::Error>>)>,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// Everything one invocation's store holds.
pub struct InvocationState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutgoingHttp,
    nn: NnCtx,
    /// The store's memory meter (also its `ResourceLimiter`).
    pub memory: MemoryMeter,
    /// How long instantiating the component took.
    pub instantiation: std::time::Duration,
}

impl InvocationState {
    /// Fresh state: each `(host directory, guest path)` of `mounts` pre-opened read-only (the
    /// models directory at [`GUEST_MODELS_DIR`] for `serve`), `env` as the guest's
    /// environment, stderr inherited (guest panics reach the log).
    pub fn new(
        mounts: &[(PathBuf, String)],
        env: &[(String, String)],
        registry: Arc<GraphRegistry>,
        memory_cap: usize,
        inference_timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let mut wasi = WasiCtx::builder();
        // A fixed insecure seed: the guest's HashMap keys (its only use) stay the same from
        // one request to the next, so identical requests burn identical fuel.
        wasi.insecure_random_seed(0x79_6f_6c_6f_2d_65_64_67_65).inherit_stderr().envs(env);
        // The guest reads a model's small files (metadata, labels) on every request: done on
        // this thread, each is a page-cache read of microseconds, where the default hands every
        // open, stat and read to Tokio's blocking pool and back (measured: ~0.5 ms a request).
        wasi.allow_blocking_current_thread(true);
        for (host, guest) in mounts {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        Ok(Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: NoOutgoingHttp,
            nn: NnCtx::new(registry, inference_timeout),
            memory: MemoryMeter::new(memory_cap),
            instantiation: std::time::Duration::ZERO,
        })
    }

    /// The wasi-nn view (for [`yolo_edge_nn::add_to_linker`]).
    pub fn nn(&mut self) -> NnView<'_> {
        NnView { ctx: &mut self.nn, table: &mut self.table }
    }

    /// What inference cost this store.
    pub fn nn_meter(&self) -> yolo_edge_nn::NnMeter {
        self.nn.meter()
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn memory_meter_caps_and_records_the_peak() {
        let mut m = MemoryMeter::new(1 << 20);
        assert!(m.memory_growing(0, 64 << 10, None).unwrap());
        assert!(m.memory_growing(64 << 10, 512 << 10, None).unwrap());
        assert!(!m.memory_growing(512 << 10, 2 << 20, None).unwrap(), "over the cap");
        assert!(!m.memory_growing(512 << 10, 768 << 10, Some(600 << 10)).unwrap(), "over the module's maximum");
        assert_eq!(m.peak(), 512 << 10, "refused growth is not counted");
        assert_eq!(m.refused(), Some(2 << 20), "the largest refused size is kept");
    }
}
