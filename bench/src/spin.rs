//! The pure-Wasm wasi-nn provider (the stock-Spin path): the function composed with the tract
//! provider, served with the host's wasi-nn off, against the native host; the provider's own
//! convolution code against tract's; and the provider unbaked, its sizes and instantiation.

use std::path::{Path, PathBuf};

use yolo_edge::bake::InstantiationTimes;
use yolo_edge_tests::{Host, repo};

use crate::common::{IMAGES, Settings, ms, step, target};
use crate::http;
use crate::servers::{UNLIMITED, start_composed};
use crate::stats::Summary;

/// The provider `cargo xtask setup` baked.
fn baked_provider() -> PathBuf {
    repo().join(yolo_edge::bake::DEFAULT_BAKED)
}

/// The provider as built.
fn unbaked_provider() -> PathBuf {
    repo().join(yolo_edge::bake::DEFAULT_PROVIDER)
}

/// `yolo-edge compose` of the function with `provider`, into the temporary directory.
fn compose(provider: &Path, out: &str) -> anyhow::Result<PathBuf> {
    let out = std::env::temp_dir().join(out);
    let (ok, _, err) = yolo_edge_tests::cli(
        &yolo_edge_tests::fresh_data_dir(),
        &["compose", "--provider", provider.to_str().unwrap_or(""), "--output", out.to_str().unwrap_or("")],
    );
    anyhow::ensure!(ok, "compose: {err}");
    Ok(out)
}

/// The function composed with the baked provider: the component of the Spin path.
pub fn compose_baked() -> anyhow::Result<PathBuf> {
    // The pure-Wasm wasi-nn provider (the stock-Spin path): the function composed with the
    // provider baked by `cargo xtask setup` (yolo-edge bake: yolov3-tiny already loaded and
    // optimised in its initial memory), and, for comparison, with the provider as built (in
    // `provider`).
    step("the function composed with the pure-Wasm wasi-nn provider (tract), baked and not");
    compose(&baked_provider(), "yolo-edge-bench-composed.wasm")
}

/// The Spin path against the native host, and the convolution variants.
pub struct SpinPath {
    /// Rounds of the alternation.
    pub rounds: usize,
    /// The Spin path, by image in [`IMAGES`] order.
    pub wasm: Vec<Summary>,
    /// The native host (fuel on) in the same rounds, by image.
    pub native: Vec<Summary>,
    /// The provider's convolutions on [`IMAGES`]`[0]`: Winograd with our kernel (the default).
    pub conv_ours: Summary,
    /// im2col with our kernel.
    pub conv_im2col: Summary,
    /// im2col with tract's kernel (tract as it ships).
    pub conv_tract: Summary,
}

/// Measure [`SpinPath`] with `composed` (from [`compose_baked`]).
pub fn versus_native(cfg: &Settings, composed: &Path) -> anyhow::Result<SpinPath> {
    // The first start compiles the composed component and caches it. The Spin path and the
    // native host alternate request by request, and every image's pair within each round, so
    // that the ratios (a target) compare the same minutes of this machine for every image.
    // 30 rounds: this VM's speed swings by 1.5x within minutes, and 10 rounds' medians moved
    // by ~15 % from one run to the next.
    let wasm_host = start_composed(composed)?;
    let native_host = Host::start(&UNLIMITED)?;
    let pairs: Vec<[http::Target; 2]> = IMAGES
        .iter()
        .map(|image| {
            [
                target(wasm_host.url("/detect"), Some(&wasm_host.key), image),
                target(native_host.url("/detect"), Some(&native_host.key), image),
            ]
        })
        .collect();
    let rounds = cfg.reps.min(30);
    let answers = http::alternating(&pairs.iter().flatten().collect::<Vec<_>>(), 2, rounds)?;
    if let Some(bad) = answers.iter().flatten().find(|a| a.status != 200) {
        anyhow::bail!("the composed component or the native host failed: {}", bad.body);
    }
    let wasm: Vec<_> = answers.iter().step_by(2).map(|a| ms(a)).collect();
    let native: Vec<_> = answers.iter().skip(1).step_by(2).map(|a| ms(a)).collect();
    drop(native_host);
    // What the provider's own convolution code is worth, request by request on large.jpg: the
    // default bake (Winograd 3×3 convolutions, our 4×8 GEMM kernel) against tract's im2col
    // lowering with our kernel (`YOLO_EDGE_NN_CONV=im2col`), and against tract as it ships
    // (im2col and tract's own kernel, `YOLO_EDGE_NN_KERNEL=tract` too).
    let variants: [(&str, &[(&str, &str)]); 2] = [
        ("im2col", &[(yolo_edge::bake::NN_CONV_VAR, "im2col")]),
        ("tract", &[(yolo_edge::bake::NN_CONV_VAR, "im2col"), (yolo_edge::bake::NN_KERNEL_VAR, "tract")]),
    ];
    let mut variant_hosts = Vec::new();
    for (name, env) in variants {
        let baked = std::env::temp_dir().join(format!("yolo-edge-bench-provider-{name}.wasm"));
        let (ok, _, err) = yolo_edge_tests::cli_env(
            &yolo_edge_tests::fresh_data_dir(),
            env,
            &[
                "bake",
                "--provider",
                unbaked_provider().to_str().unwrap_or(""),
                "--models",
                yolo_edge_tests::models().to_str().unwrap_or(""),
                "--model",
                "yolov3-tiny",
                "--output",
                baked.to_str().unwrap_or(""),
            ],
        );
        anyhow::ensure!(ok, "bake ({name}): {err}");
        let composed = compose(&baked, &format!("yolo-edge-bench-composed-{name}.wasm"))?;
        variant_hosts.push(start_composed(&composed)?);
    }
    let mut variant_targets = vec![target(wasm_host.url("/detect"), Some(&wasm_host.key), &IMAGES[0])];
    variant_targets.extend(variant_hosts.iter().map(|h| target(h.url("/detect"), Some(&h.key), &IMAGES[0])));
    let conv_answers = http::alternating(&variant_targets.iter().collect::<Vec<_>>(), 1, cfg.reps.min(10))?;
    if let Some(bad) = conv_answers.iter().flatten().find(|a| a.status != 200) {
        anyhow::bail!("composed component (convolution comparison): {}", bad.body);
    }
    let (conv_ours, conv_im2col, conv_tract) = (ms(&conv_answers[0]), ms(&conv_answers[1]), ms(&conv_answers[2]));
    drop(variant_hosts);
    drop(wasm_host);
    Ok(SpinPath { rounds, wasm, native, conv_ours, conv_im2col, conv_tract })
}

/// The provider itself: unbaked, and the baked one's size and instantiation.
pub struct Provider {
    /// The function composed with the unbaked provider, one client on [`IMAGES`]`[1]`.
    pub unbaked: Summary,
    /// The baked provider's size, bytes.
    pub baked_size: u64,
    /// The unbaked provider's size, bytes.
    pub unbaked_size: u64,
    /// Compiling and instantiating the baked provider.
    pub inst: InstantiationTimes,
}

/// Measure [`Provider`].
pub fn provider(cfg: &Settings) -> anyhow::Result<Provider> {
    let unbaked = compose(&unbaked_provider(), "yolo-edge-bench-composed-unbaked.wasm")?;
    let unbaked_host = start_composed(&unbaked)?;
    let t = target(unbaked_host.url("/detect"), Some(&unbaked_host.key), &IMAGES[1]);
    let answers = http::sequential(&t, 1, cfg.reps.min(5))?;
    anyhow::ensure!(answers.iter().all(|a| a.status == 200), "the unbaked provider failed: {}", answers[0].body);
    let unbaked_lat = ms(&answers);
    drop(unbaked_host);
    let baked_size = std::fs::metadata(baked_provider())?.len();
    let unbaked_size = std::fs::metadata(unbaked_provider())?.len();
    let inst = yolo_edge::bake::instantiation_times(&std::fs::read(baked_provider())?, 20)?;
    Ok(Provider { unbaked: unbaked_lat, baked_size, unbaked_size, inst })
}
