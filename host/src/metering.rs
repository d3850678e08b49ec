//! What one invocation consumed, measured by the host.

use std::time::Duration;

/// Per-invocation usage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Guest fuel consumed (Wasmtime fuel: guest instructions; deterministic for the same request).
    pub fuel: u64,
    /// Wall time from store creation to the end of the guest's handler.
    pub wall: Duration,
    /// Time inside wasi-nn `compute` (measured in the host; inference burns no fuel).
    pub inference: Duration,
    /// Time spent waiting for a free inference session.
    pub inference_queued: Duration,
    /// Number of wasi-nn `compute` calls.
    pub computes: u32,
    /// Peak linear memory of the instance, in bytes.
    pub peak_memory: u64,
    /// Decoded input pixels (width × height), as reported by the function.
    pub pixels: u64,
    /// Time to instantiate the component (part of `wall`).
    pub instantiation: Duration,
}

/// Response headers carrying the usage to the client.
pub mod headers {
    /// The invocation's id (UUIDv7).
    pub const INVOCATION_ID: &str = "x-invocation-id";
    /// Guest fuel consumed.
    pub const FUEL: &str = "x-fuel";
    /// Wall time of the invocation, µs.
    pub const WALL_US: &str = "x-wall-us";
    /// Time inside wasi-nn compute, µs.
    pub const NN_US: &str = "x-nn-us";
    /// Peak linear memory of the instance, bytes.
    pub const MEMORY_BYTES: &str = "x-memory-bytes";
    /// Decoded input pixels.
    pub const PIXELS: &str = "x-pixels";
    /// Time to instantiate the component, µs.
    pub const INSTANTIATE_US: &str = "x-instantiate-us";
    /// Tokens charged for this invocation.
    pub const TOKENS: &str = "x-tokens";
    /// The tenant's balance after it.
    pub const BALANCE: &str = "x-balance";
    /// `true` on an idempotent replay.
    pub const REPLAYED: &str = "x-replayed";
    /// On a replay: the invocation whose answer it is.
    pub const REPLAY_OF: &str = "x-replay-of";
    /// `hit` (answered from the result cache), `miss` (computed, then stored) or `bypass`
    /// (`Cache-Control: no-cache` / `no-store`), on `/detect` answers while the cache is on.
    pub const CACHE: &str = "x-cache";
}
