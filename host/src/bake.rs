//! Baking the wasi-nn provider (`yolo-edge bake`): a snapshot of the provider component with a
//! model already loaded and optimised in its linear memory (Wizer, the `wasmtime-wizer`
//! crate).
//!
//! Without it, stock Spin instantiates the provider afresh for every request, and the provider
//! reads the ONNX file and lets tract optimise it inside Wasm every time (seconds). Baking runs
//! the provider's `wizer-initialize` export once, here, with `/models` pre-opened read-only
//! and `YOLO_EDGE_BAKE_MODEL` naming the model; Wizer then writes the instance's memory and
//! globals back as the component's initial state. Runtimes map that initial memory
//! copy-on-write, so each instance starts with the optimised model in place and `load-by-name`
//! of the baked model costs nothing; other models still load from `/models`.
//!
//! The provider is baked on its own, before it is composed with the function (Wizer refuses
//! nested components). The baked component keeps its `wizer-initialize` export (Wizer's
//! validation needs it); calling it again does nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, Instance, Lift, Linker, ResourceTable, WasmList};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use crate::state::GUEST_MODELS_DIR;

/// The provider's export that bakes a model in.
pub const INIT_FUNC: &str = "wizer-initialize";

/// The environment variable that tells `wizer-initialize` which model to load.
pub const BAKE_MODEL_VAR: &str = "YOLO_EDGE_BAKE_MODEL";

/// Passed through to `wizer-initialize` when set: which wasm GEMM kernel the baked plan uses
/// (`4x8`, the provider's default, or `tract` for tract's own; a diagnostic).
pub const NN_KERNEL_VAR: &str = "YOLO_EDGE_NN_KERNEL";

/// Passed through to `wizer-initialize` when set: how the baked plan computes 3×3
/// convolutions (`winograd`, the provider's default, or `im2col` for tract's own; a diagnostic).
pub const NN_CONV_VAR: &str = "YOLO_EDGE_NN_CONV";

/// The unbaked provider, as `cargo build --profile wasm` writes it.
pub const DEFAULT_PROVIDER: &str = "target/wasm32-wasip2/wasm/yolo_edge_nn_provider.wasm";

/// The baked provider (default model) that `spin.toml` names and `compose` uses by default.
pub const DEFAULT_BAKED: &str = "target/wasm32-wasip2/wasm/provider-yolov3-tiny.wasm";

/// What one bake did.
#[derive(Debug, Clone)]
pub struct Baked {
    /// The baked component's bytes.
    pub wasm: Vec<u8>,
    /// Time to compile the instrumented provider.
    pub compile: Duration,
    /// Time inside `wizer-initialize` (reading and optimising the model in Wasm).
    pub init: Duration,
    /// Time to snapshot and rewrite the component.
    pub snapshot: Duration,
}

/// Bake `model` (a directory under `models_dir`, with `model.onnx`) into the provider
/// component `provider`; the baked component's bytes and timings.
pub async fn bake(provider: &[u8], models_dir: &Path, model: &str) -> anyhow::Result<Baked> {
    anyhow::ensure!(
        models_dir.join(model).join("model.onnx").is_file(),
        "{} has no {model}/model.onnx to bake in",
        models_dir.display()
    );
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).map_err(|e| anyhow::Error::from(e).context("cannot create the engine"))?;

    let mut wasi = WasiCtx::builder();
    wasi.preopened_dir(models_dir, GUEST_MODELS_DIR, FsPerms::ReadOnly)
        .map_err(|e| anyhow::Error::from(e).context(format!("cannot open {}", models_dir.display())))?;
    wasi.env(BAKE_MODEL_VAR, model);
    for var in [NN_KERNEL_VAR, NN_CONV_VAR] {
        if let Ok(value) = std::env::var(var) {
            wasi.env(var, value);
        }
    }
    let wasi = wasi.inherit_stderr().build();
    let mut store = Store::new(&engine, BakeState { wasi, table: ResourceTable::new() });
    // Wizer reads the whole linear memory back as one `list<u8>`: more than Wasmtime's default
    // 128 MiB per host call once the baked model is bigger (Winograd-transformed weights).
    store.set_hostcall_fuel(usize::MAX);
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;

    let mut wizer = Wizer::new();
    wizer.init_func(INIT_FUNC).keep_init_func(true);
    let started = Instant::now();
    let (cx, instrumented) = wizer.instrument_component(provider).map_err(wasmtime_error)?;
    let component = Component::new(&engine, &instrumented).map_err(wasmtime_error)?;
    let compile = started.elapsed();

    let started = Instant::now();
    let instance = linker.instantiate_async(&mut store, &component).await.map_err(wasmtime_error)?;
    let init = instance.get_func(&mut store, INIT_FUNC).with_context(|| {
        format!("the provider exports no `{INIT_FUNC}` function (is it yolo-edge's nn provider, built from this tree?)")
    })?;
    init.call_async(&mut store, &[], &mut [])
        .await
        .map_err(|e| wasmtime_error(e).context(format!("the provider could not bake {model:?} in")))?;
    let init = started.elapsed();

    let started = Instant::now();
    let wasm = wizer
        .snapshot_component(&cx, &mut Snapshotting { store: &mut store, instance })
        .await
        .map_err(wasmtime_error)?;
    Ok(Baked { wasm, compile, init, snapshot: started.elapsed() })
}

/// `yolo-edge bake`: read `provider`, bake `model` from `models_dir` in, write `output`.
pub async fn bake_file(provider: &Path, models_dir: &Path, model: &str, output: &Path) -> anyhow::Result<Baked> {
    let wasm = std::fs::read(provider).with_context(|| {
        format!("cannot read the provider {} (build it with `cargo xtask setup`)", provider.display())
    })?;
    let baked = bake(&wasm, models_dir, model).await?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = PathBuf::from(format!("{}.tmp{}", output.display(), std::process::id()));
    std::fs::write(&tmp, &baked.wasm).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    Ok(baked)
}

fn wasmtime_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from(e)
}

/// The store's data while baking: WASI only (the provider imports nothing else).
struct BakeState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BakeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Wizer's view of the initialised instance: it calls the accessor functions Wizer's
/// instrumentation added, to read memories and globals back (as `wasmtime-wizer`'s own
/// `WasmtimeWizerComponent`, which needs Wasmtime features the host does not build).
struct Snapshotting<'a> {
    store: &'a mut Store<BakeState>,
    instance: Instance,
}

impl Snapshotting<'_> {
    async fn call<R, R2>(
        &mut self,
        instance: &str,
        func: &str,
        use_ret: impl FnOnce(&mut Store<BakeState>, R) -> R2,
    ) -> R2
    where
        R: Lift + 'static,
    {
        // Wizer added these exports itself, with these types: a mismatch is a bug in Wizer.
        let (_, exported) =
            self.instance.get_export(&mut *self.store, None, instance).expect("Wizer's accessor instance");
        let (_, func_index) =
            self.instance.get_export(&mut *self.store, Some(&exported), func).expect("Wizer's accessor function");
        let typed = self.instance.get_typed_func::<(), (R,)>(&mut *self.store, func_index).expect("its type");
        let ret = typed.call_async(&mut *self.store, ()).await.expect("reading the snapshot").0;
        use_ret(&mut *self.store, ret)
    }
}

impl ComponentInstanceState for Snapshotting<'_> {
    async fn call_func_ret_list_u8(&mut self, instance: &str, func: &str, contents: impl FnOnce(&[u8]) + Send) {
        self.call(instance, func, |store, list: WasmList<u8>| contents(list.as_le_slice(&store))).await
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, r: f32| r.to_bits()).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, r: f64| r.to_bits()).await
    }
}

/// How long instantiating a component takes (see [`instantiation_times`]).
#[derive(Debug, Clone, Copy)]
pub struct InstantiationTimes {
    /// Compiling it (no cache).
    pub compile: Duration,
    /// The first instantiation (memory image created and mapped for the first time).
    pub first: Duration,
    /// The median of the later ones.
    pub median: Duration,
}

/// Compile `wasm` (a component importing only WASI, such as the provider) with the serving
/// engine's settings (pooling allocator, copy-on-write memory images), then instantiate it
/// `runs` times, each in a fresh store, as every request does (synchronously: nothing runs
/// inside the instance).
pub fn instantiation_times(wasm: &[u8], runs: usize) -> anyhow::Result<InstantiationTimes> {
    let engine = crate::engine::build_engine(&crate::engine::EngineOptions {
        max_instances: 4,
        max_memory_bytes: 1 << 30,
        fuel: false,
    })?;
    let started = Instant::now();
    let component = Component::new(&engine, wasm).map_err(wasmtime_error)?;
    let compile = started.elapsed();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let pre = linker.instantiate_pre(&component).map_err(wasmtime_error)?;
    let mut times = Vec::with_capacity(runs.max(2));
    for _ in 0..runs.max(2) {
        let mut store =
            Store::new(&engine, BakeState { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
        store.set_epoch_deadline(u64::MAX / 2);
        let started = Instant::now();
        pre.instantiate(&mut store).map_err(wasmtime_error)?;
        times.push(started.elapsed());
    }
    let first = times.remove(0);
    times.sort();
    Ok(InstantiationTimes { compile, first, median: times[times.len() / 2] })
}
