//! Project automation. The README's two commands live here:
//!
//! * `cargo xtask run [-- SERVE_ARGS]`: set everything up, then serve on 127.0.0.1:8080;
//! * `cargo xtask test [-- TEST_ARGS]`: set everything up, then run every test.
//!
//! Also `cargo xtask setup` (set-up only) and `cargo xtask lint` (rustfmt, clippy and docs on
//! the native crates and the wasm32-wasip2 components, and a check of the `cuda` feature).
//!
//! Set-up is idempotent and prints each step: the wasm target, a Python venv with the
//! pinned tools (`tools/requirements.txt`, which also brings ONNX Runtime's native
//! library), the library laid out under `.cache/onnxruntime/lib/`, the default model
//! converted from Darknet into `models/yolov3-tiny/`, test photographs in `tests/data/`, the
//! function built for wasm32-wasip2 and the host in release. Only registries are used:
//! PyPI through pip, crates.io through cargo.

mod dist;
mod repo;
mod setup;
mod tasks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::repo::Repo;

/// `cargo xtask`: the README's two commands, and the project's other automation. (Arguments
/// by clap, as the host's own command line: help, errors and `--` handled the same way.)
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Set up, serve, test and measure yolo-edge")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Set up, then serve the default model on http://127.0.0.1:8080 (ARGS go to `yolo-edge serve`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "SERVE_ARGS")]
        args: Vec<String>,
    },
    /// Set up, then check (rustfmt, clippy, docs) and run every test (unit, in-process and
    /// end-to-end); ARGS go to `cargo test`.
    Test {
        /// Also a minutes-long load test, a 10-minute soak and a bounded fuzzing run.
        #[arg(long)]
        heavy: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "TEST_ARGS")]
        args: Vec<String>,
    },
    /// Only the set-up steps.
    Setup,
    /// The checks of `test` (rustfmt, clippy -D warnings, docs) and the `cuda` feature.
    Lint,
    /// Set up (plus stock `wasmtime serve` as a baseline), measure, write BENCHMARKS.md
    /// (`bench -- --quick` for a shorter run).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "BENCH_ARGS")]
        args: Vec<String>,
    },
    /// Only what a server needs (host, ONNX Runtime, component, default model, config), built
    /// and laid out in DIR: what deploy/Containerfile runs.
    Dist {
        /// Where to lay it out.
        dir: PathBuf,
    },
}

/// What follows a task's name, without the `--` that may separate it (`run -- --port 9000`
/// and `run --port 9000` mean the same, as before clap).
fn passed(args: Vec<String>) -> Vec<String> {
    args.into_iter().skip_while(|a| a == "--").collect()
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("\nxtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let repo = Repo::locate()?;
    match cli.task {
        Task::Setup => repo.setup(),
        Task::Run { args } => {
            repo.setup()?;
            repo.serve(&passed(args))
        }
        Task::Test { heavy, args } => {
            // `test -- --heavy` keeps working too.
            let mut args = passed(args);
            let heavy = heavy || args.first().is_some_and(|a| a == "--heavy");
            if args.first().is_some_and(|a| a == "--heavy") {
                args = passed(args.split_off(1));
            }
            repo.setup()?;
            repo.test(&args)?;
            if heavy {
                repo.heavy()?;
            }
            Ok(())
        }
        Task::Lint => repo.lint(),
        Task::Bench { args } => {
            repo.setup()?;
            repo.bench(&passed(args))
        }
        Task::Dist { dir } => repo.dist(&dir),
    }
}
