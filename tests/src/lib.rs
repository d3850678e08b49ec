//! Harness for the end-to-end tests: start the real `yolo-edge` host (the release binary
//! `cargo xtask` built) with the real component and model, talk HTTP to it, and compute
//! independent reference answers with `tests/reference/reference.py` (Pillow + the
//! `onnxruntime` Python package) in the set-up venv.
#![deny(missing_docs)]

mod host;
mod postgres;
mod redis;
mod reference;
mod reply;

use std::path::{Path, PathBuf};

pub use self::host::*;
pub use self::postgres::PostgresServer;
pub use self::redis::RedisServer;
pub use self::reference::*;
pub use self::reply::Reply;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| repo().join(default))
}

/// The host binary (`YOLO_EDGE_BIN`, default `target/release/yolo-edge`).
pub fn host_binary() -> PathBuf {
    env_path("YOLO_EDGE_BIN", "target/release/yolo-edge")
}

/// The function component (`YOLO_EDGE_COMPONENT`).
pub fn component() -> PathBuf {
    env_path("YOLO_EDGE_COMPONENT", "target/wasm32-wasip2/wasm/yolo_edge_function.wasm")
}

/// The misbehaving test-only component (`tests/guest`).
pub fn test_guest() -> PathBuf {
    repo().join("target/wasm32-wasip2/wasm/yolo_edge_test_guest.wasm")
}

/// The models directory set-up produced.
pub fn models() -> PathBuf {
    repo().join("models")
}

/// A test photograph from `tests/data/`.
pub fn photo(name: &str) -> PathBuf {
    repo().join("tests/data").join(name)
}

/// The bytes of a test photograph.
pub fn photo_bytes(name: &str) -> Vec<u8> {
    let path = photo(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask test`, which fetches it)", path.display()))
}
