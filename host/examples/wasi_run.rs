//! Run a `wasi:cli` command component, with the current directory pre-opened read-only.
//!
//! `cargo xtask test` uses it as the cargo runner for `wasm32-wasip2`, so that yolo-core's
//! unit tests also run compiled for the guest: the SIMD128 code paths exist only there.
//!
//! ```text
//! cargo run --release -p yolo-edge --example wasi_run -- COMPONENT.wasm [ARGS...]
//! ```
//!
//! With `WASI_RUN_FUEL` set it also prints the fuel the run consumed (to stderr). With
//! `WASI_RUN_PERFMAP` set it writes `/tmp/perf-PID.map`, so that `perf record` / `perf report`
//! name the guest's functions (build the guest with symbols: `--release`, not `--profile wasm`).
//! With `WASI_RUN_JITDUMP` set it writes `jit-PID.dump` in the current directory instead:
//! `perf record -k 1`, then `perf inject --jit`, and `perf annotate` shows the machine code
//! Cranelift made of each guest function, with its samples.

use anyhow::Context;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// The store's state: WASI and its resource table.
struct Command {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Command {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().context("usage: wasi_run COMPONENT.wasm [ARGS...]")?;
    let fuel = std::env::var_os("WASI_RUN_FUEL").is_some();
    let mut config = Config::new();
    config.consume_fuel(fuel);
    if std::env::var_os("WASI_RUN_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if std::env::var_os("WASI_RUN_JITDUMP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::JitDump);
    }
    let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
    let component = Component::from_file(&engine, path)
        .map_err(|e| anyhow::Error::from(e).context(format!("cannot load {path}")))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    let ctx = WasiCtx::builder().args(&args).inherit_stdio().preopened_dir(".", ".", FsPerms::ReadOnly)?.build();
    let mut store = Store::new(&engine, Command { ctx, table: ResourceTable::new() });
    if fuel {
        store.set_fuel(u64::MAX).map_err(anyhow::Error::from)?;
    }
    let command = wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut store, &component, &linker)
        .await
        .map_err(anyhow::Error::from)?;
    let status = command.wasi_cli_run().call_run(&mut store).await;
    if fuel {
        eprintln!("fuel consumed: {}", u64::MAX - store.get_fuel().map_err(anyhow::Error::from)?);
    }
    match status {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => std::process::exit(1),
        // A trap (a panic in the guest) or `exit` with a status: report it as a failure.
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => std::process::exit(exit.0),
            None => Err(anyhow::Error::from(e)),
        },
    }
}
