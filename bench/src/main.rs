//! `cargo xtask bench`: one run, same machine, same images, same model:
//!
//! 1. the bare native pipeline (decode + letterbox + ONNX Runtime + NMS, in-process, with
//!    the host's adaptive threading: every core for a lone run, one thread per run under load);
//! 2. Python (Pillow + `onnxruntime` with default threads): in-process and behind a
//!    `ThreadingHTTPServer`;
//! 3. stock `wasmtime serve -S nn` (Wasmtime 48.0.8, ONNX backend) serving the same component;
//! 4. our host: warm latency, throughput with 1/2/4/8 clients, cold start, instantiation
//!    time, RSS, and the cost of fuel metering (on vs off);
//! 5. the shared ledger: one host on SQLite against one, then two hosts on one PostgreSQL.
//!
//! Every comparison behind the targets interleaves its sides (bare pipeline, host and Python
//! request by request; the throughputs in alternating rounds; fuel on and off request by
//! request, judged by the median of each round's ratio), because the speed of these shared
//! machines drifts within minutes.
//!
//! Writes `BENCHMARKS.md` (tables, ratios against the baselines of the same run) and
//! `BENCHMARKS.json` (the raw numbers). Not a test: nothing here asserts a timing.
#![deny(missing_docs)]

mod bare;
mod common;
mod http;
mod large;
mod ledger;
mod metering;
mod one_client;
mod openvino;
mod python;
mod report;
mod restart;
mod servers;
mod spin;
mod stats;
mod targets;
mod throughput;

use common::{Machine, settings};
use report::Results;
use servers::Servers;

/// Start the servers, measure every part in turn (each server stops after the last part that
/// uses it), then write the report.
fn main() -> anyhow::Result<()> {
    let cfg = settings();
    let machine = Machine::probe();
    let mut servers = Servers::start()?;
    let agent = http::agent();

    // 1. Warm latency, one client: the bare pipeline (every core, as the host's lone
    //    request), our host and Python in-process, request by request.
    let (warm, bare) = one_client::warm_latency(&cfg, machine.cores, &servers.host, &agent, &mut servers.py_worker)?;
    let large = large::large_photo(cfg.reps, &servers.host, &agent, servers.py_worker)?;

    // 2. Throughput with 1, 2, 4 and 8 clients, every contender in alternating rounds.
    let throughput = throughput::throughput(
        &cfg,
        &bare,
        &servers.host,
        &servers.py_server,
        &servers.ov_host,
        servers.stock.as_ref(),
    );
    let single_nn = throughput::cpu_floor(&cfg)?;

    let metering = metering::metering(&cfg, &servers.host, servers.no_fuel)?;
    let openvino = openvino::openvino(&cfg, machine.cores, &agent, servers.ov_host)?;
    let others = one_client::other_servers(&cfg, servers.py_server, servers.stock)?;
    // Nothing after this runs the first host or the bare pipeline.
    drop(servers.host);
    drop(bare);

    let cache = one_client::cache_hits(&cfg)?;
    let ledger = ledger::shared_ledger(&cfg)?;
    let cold = restart::cold_start()?;
    let composed = spin::compose_baked()?;
    let spin = spin::versus_native(&cfg, &composed)?;
    let restart = restart::composed(&composed)?;
    let provider = spin::provider(&cfg)?;

    let results = Results {
        machine,
        warm,
        large,
        throughput,
        single_nn,
        metering,
        openvino,
        others,
        cache,
        ledger,
        cold,
        spin,
        restart,
        provider,
    };
    report::write(&cfg.out, &results)
}
