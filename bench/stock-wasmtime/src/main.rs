//! `stock-wasmtime-serve ARGS` = `wasmtime serve ARGS` of Wasmtime 48.0.8 (its own
//! `ServeCommand`), built with wasi-nn's ONNX Runtime backend.
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let args = std::env::args().take(1).chain(std::env::args().skip(1));
    wasmtime_cli::commands::ServeCommand::parse_from(args).execute().map_err(anyhow::Error::from)
}
