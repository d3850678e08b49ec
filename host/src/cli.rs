//! The `yolo-edge` command line (clap): `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::AsyncReadExt as _;

use crate::engine::{EngineOptions, build_engine, build_linker, default_cache_dir, load_component};
use crate::invoke::{Invoker, InvokerOptions};
use crate::nn::onnx::{OnnxOptions, init_runtime};
use crate::nn::registry::GraphRegistry;
use crate::server::{App, DEFAULT_MAX_BODY_BYTES, serve};

/// Serverless YOLO object detection: a WebAssembly function behind HTTP, metered per call.
#[derive(Debug, Parser)]
#[command(name = "yolo-edge", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the detection function over HTTP.
    Serve(ServeArgs),
}

/// `yolo-edge serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The function component (.wasm).
    #[arg(
        long,
        default_value = "target/wasm32-wasip2/wasm/yolo_edge_function.wasm"
    )]
    pub component: PathBuf,
    /// Directory of model directories (each with model.onnx, metadata.json, labels.txt).
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// The model used when a request names none.
    #[arg(long, default_value = "yolov3-tiny")]
    pub default_model: String,
    /// ONNX Runtime's shared library (file or directory); default: next to this binary,
    /// then the repository's `.cache/onnxruntime/lib/`.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest decoded image, in pixels (width × height).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// ONNX Runtime sessions per model (concurrent inferences); default: one per core.
    #[arg(long)]
    pub nn_sessions: Option<usize>,
    /// Intra-op threads per ONNX Runtime session.
    #[arg(long, default_value_t = 1)]
    pub nn_threads: usize,
    /// Instances alive at once (pooling allocator slots).
    #[arg(long, default_value_t = 64)]
    pub max_instances: u32,
    /// Largest linear memory of one instance, MiB.
    #[arg(long, default_value_t = 1024)]
    pub max_memory_mib: usize,
    /// Fuel one invocation may burn.
    #[arg(long, default_value_t = 200_000_000_000)]
    pub fuel_budget: u64,
    /// Turn fuel metering off (for measuring its cost; responses then report x-fuel: 0).
    #[arg(long)]
    pub no_fuel: bool,
    /// Directory for compiled component code; default `$XDG_CACHE_HOME/yolo-edge` or `~/.cache/yolo-edge`.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Always compile the component, never use or write the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Shut down when standard input closes (for supervisors and test harnesses that own the process).
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
}

/// Parse the command line and run.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(run_serve(args)),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Build everything `serve` needs and serve until SIGINT / SIGTERM.
pub async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let ort = init_runtime(args.onnxruntime.as_deref())?;
    tracing::info!(library = %ort.display(), "ONNX Runtime opened");

    let mut onnx = OnnxOptions::default();
    if let Some(n) = args.nn_sessions {
        onnx.sessions = n.max(1);
    }
    onnx.threads = args.nn_threads.max(1);
    let registry = Arc::new(GraphRegistry::load_dir(&args.models, onnx)?);
    if registry.names().is_empty() {
        anyhow::bail!(
            "no model found in {} (each model is a directory with metadata.json and model.onnx); run `cargo xtask run` to set up the default model",
            args.models.display()
        );
    }
    if !registry.names().contains(&args.default_model) {
        anyhow::bail!(
            "the default model {:?} is not in {} (found: {})",
            args.default_model,
            args.models.display(),
            registry.names().join(", ")
        );
    }

    let max_memory_bytes = args.max_memory_mib << 20;
    let engine_options = EngineOptions {
        max_instances: args.max_instances,
        max_memory_bytes,
        fuel: !args.no_fuel,
    };
    let engine = build_engine(&engine_options)?;
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let loaded = load_component(&engine, &args.component, cache_dir.as_deref())?;
    tracing::info!(
        component = %args.component.display(),
        cached = loaded.cached,
        ms = loaded.took.as_millis() as u64,
        "component ready"
    );
    let linker = build_linker(&engine)?;
    let models_dir = args
        .models
        .canonicalize()
        .with_context(|| format!("cannot open {}", args.models.display()))?;
    let env = vec![
        (
            "YOLO_EDGE_DEFAULT_MODEL".to_owned(),
            args.default_model.clone(),
        ),
        (
            "YOLO_EDGE_MAX_BODY_BYTES".to_owned(),
            args.max_body_bytes.to_string(),
        ),
        (
            "YOLO_EDGE_MAX_PIXELS".to_owned(),
            args.max_pixels.to_string(),
        ),
    ];
    let invoker = Invoker::new(
        &linker,
        &loaded.component,
        registry,
        InvokerOptions {
            models_dir,
            env,
            fuel_budget: args.fuel_budget,
            fuel: !args.no_fuel,
            max_memory_bytes,
        },
    )?;
    let app = Arc::new(App {
        invoker,
        max_body_bytes: args.max_body_bytes,
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // The one line on stdout: scripts and tests read the address from it.
    println!("yolo-edge listening on http://{addr}");
    serve(
        listener,
        app,
        shutdown_signal(args.exit_on_stdin_eof),
        Duration::from_secs(args.drain_seconds),
    )
    .await
}

/// Resolves on SIGINT, SIGTERM, or (when asked) end of standard input.
async fn shutdown_signal(on_stdin_eof: bool) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let stdin_eof = async {
        if !on_stdin_eof {
            return std::future::pending::<()>().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
        () = stdin_eof => tracing::info!("standard input closed"),
    }
}
