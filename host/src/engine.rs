//! The Wasmtime engine (pooling allocator, fuel), the linker, and loading the component
//! through an on-disk cache of compiled code.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::state::InvocationState;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances that may be alive at once (pooling allocator slots).
    pub max_instances: u32,
    /// Largest linear memory of one instance, in bytes.
    pub max_memory_bytes: usize,
    /// Count guest instructions as fuel.
    pub fuel: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { max_instances: 64, max_memory_bytes: 1 << 30, fuel: true }
    }
}

/// Build the engine: component model, async host calls, fuel, pooling allocator.
pub fn build_engine(options: &EngineOptions) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(options.fuel);
    // Wall-clock deadlines. With fuel, the fuel checks Wasmtime already compiles in make the
    // guest yield every `invoke::FUEL_YIELD_INTERVAL` units, and a timer stops it (`invoke`);
    // without, a ticker advances the epoch every EPOCH_TICK and a store traps once its
    // deadline (in ticks) passes. Epoch checks are a load and compare at every loop header and
    // function entry on top of fuel's: measured 5-10 % of the Spin path's inference.
    config.epoch_interruption(!options.fuel);
    let mut pool = PoolingAllocationConfig::default();
    let n = options.max_instances;
    // A Rust wasip2 component instantiates a few core modules (the program and adapter shims).
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .max_memory_size(options.max_memory_bytes)
        // A request's guest touches a few MiB (decoded image, resize bands, the input tensor).
        // Keeping that much of each slot resident and resetting it in place on reuse is
        // cheaper than returning the pages to the kernel and faulting them in again on every
        // request (measured: 2–4 ms less guest time per request on a 1280×720 JPEG). The baked
        // pure-Wasm provider (the Spin path) has 127 MB of memory, ~70 MB of it written per
        // request: released, that would be ~18 000 page faults each time.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        // With PAGEMAP_SCAN (Linux 6.7+; elsewhere the whole kept range is reset) only the
        // pages an instance wrote are reset: without it every reuse memsets (or, for a memory
        // image, copies back) the slot's whole resident range. Measured on the Spin path
        // (coffee.png, one client, the provider's store then still dropped before answering):
        // client time minus the invocation's wall time, median of 15, fell from 25.0 to 12.8 ms.
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine =
        Engine::new(&config).map_err(|e| anyhow::Error::from(e).context("cannot create the Wasmtime engine"))?;
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch ticker")?;
    Ok(engine)
}

/// How much of each pooled linear memory stays resident between instances.
pub const KEEP_RESIDENT_BYTES: usize = 160 << 20;

/// How often the epoch advances: the granularity of invocation deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A linker with WASI 0.2, wasi-http 0.2 and (when `with_nn`) our wasi-nn. Without it, a
/// component must bring its own wasi-nn (composed with a provider), as on stock Spin.
pub fn build_linker(engine: &Engine, with_nn: bool) -> anyhow::Result<Linker<InvocationState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    if with_nn {
        yolo_edge_nn::add_to_linker(&mut linker, InvocationState::nn)?;
    }
    Ok(linker)
}

/// How the component was obtained.
#[derive(Debug, Clone)]
pub struct LoadedComponent {
    /// The component.
    pub component: Component,
    /// Whether it came from the compiled-code cache.
    pub cached: bool,
    /// Time to compile or deserialize it.
    pub took: Duration,
}

/// The default cache directory: `$XDG_CACHE_HOME/yolo-edge` or `~/.cache/yolo-edge`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("yolo-edge"))
}

/// Load a component file; see [`load_component_bytes`].
pub fn load_component(engine: &Engine, path: &Path, cache_dir: Option<&Path>) -> anyhow::Result<LoadedComponent> {
    let wasm = std::fs::read(path).with_context(|| {
        format!("cannot read the component {} (build it with `cargo xtask run`, or pass --component)", path.display())
    })?;
    load_component_bytes(engine, &wasm, cache_dir)
}

/// Load a component, reusing compiled code from `cache_dir` when the same bytes were
/// compiled before by a compatible engine.
pub fn load_component_bytes(engine: &Engine, wasm: &[u8], cache_dir: Option<&Path>) -> anyhow::Result<LoadedComponent> {
    let started = Instant::now();
    let Some(dir) = cache_dir else {
        let component = Component::new(engine, wasm).map_err(compile_error)?;
        return Ok(LoadedComponent { component, cached: false, took: started.elapsed() });
    };
    let mut engine_hash = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let key = format!("{:x}-{:016x}.cwasm", Sha256::digest(wasm), engine_hash.finish());
    let cached_path = dir.join(key);
    if cached_path.is_file() {
        match deserialize(engine, &cached_path) {
            Ok(component) => {
                return Ok(LoadedComponent { component, cached: true, took: started.elapsed() });
            }
            Err(e) => {
                tracing::warn!(path = %cached_path.display(), error = %e, "ignoring an unusable compiled-code cache entry")
            }
        }
    }
    let compiled = engine.precompile_component(wasm).map_err(compile_error)?;
    let component = deserialize_bytes(engine, &compiled)?;
    if let Err(e) = write_atomically(dir, &cached_path, &compiled) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the compiled-code cache");
    }
    prune(dir, CACHE_ENTRIES);
    Ok(LoadedComponent { component, cached: false, took: started.elapsed() })
}

// SAFETY (both functions): the bytes were produced by `Engine::precompile_component` of an
// engine with the same compatibility hash (it is part of the cache key), and the cache
// directory belongs to the user running the host.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    Ok(unsafe { Component::deserialize_file(engine, path) }?)
}

#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Ok(unsafe { Component::deserialize(engine, bytes) }?)
}

/// Compiled components kept in the cache; older ones are removed.
const CACHE_ENTRIES: usize = 16;

/// Keep the `keep` most recently written `.cwasm` files of `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, old) in files.into_iter().skip(keep) {
        let _ = std::fs::remove_file(old);
    }
}

fn compile_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from(e).context("cannot compile the component")
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_newest_entries() {
        let dir = std::env::temp_dir().join(format!("yolo-edge-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..5 {
            std::fs::write(dir.join(format!("{i}.cwasm")), b"x").unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::write(dir.join("other.txt"), b"kept").unwrap();
        prune(&dir, 2);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["3.cwasm", "4.cwasm", "other.txt"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
