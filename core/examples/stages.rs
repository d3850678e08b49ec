//! Time the guest's image stages (decode, letterbox to 416×416) on one image, natively or
//! compiled for the guest:
//!
//! ```text
//! cargo run --release -p yolo-core --example stages -- tests/data/large.jpg
//! cargo build --profile wasm --target wasm32-wasip2 -p yolo-core --example stages
//! cargo build --release -p yolo-edge --example wasi_run
//! WASI_RUN_FUEL=1 target/release/examples/wasi_run \
//!     target/wasm32-wasip2/wasm/examples/stages.wasm tests/data/large.jpg
//! ```
//!
//! It prints medians and a checksum of the input tensor, so that a faster letterbox can be
//! checked to give the same bytes. Timings of the whole service are `cargo xtask bench`'s.

use std::time::{Duration, Instant};

use yolo_core::decode::{DecodeLimits, decode_rgb};
use yolo_core::letterbox::letterbox_le_bytes;

const RUNS: usize = 21;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: stages IMAGE");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let decode = median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                decode_rgb(&bytes, DecodeLimits::default()).expect("the image decodes");
                start.elapsed()
            })
            .collect(),
    );
    let image = decode_rgb(&bytes, DecodeLimits::default()).expect("the image decodes");
    let mut checksum = 0u64;
    let letterbox = median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let (tensor, _) = letterbox_le_bytes(&image, 416, 416, [114, 114, 114]);
                let elapsed = start.elapsed();
                checksum =
                    tensor.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
                elapsed
            })
            .collect(),
    );
    println!(
        "{path}: {}x{}, decode p50 {decode:?}, letterbox p50 {letterbox:?}, tensor FNV-1a {checksum:016x}",
        image.width(),
        image.height()
    );
}
