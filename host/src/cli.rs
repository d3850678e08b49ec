//! The `yolo-edge` command line (clap): `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::AsyncReadExt as _;

use crate::config::Config;
use crate::db::default_data_dir;
use crate::launch::{Plan, launch};
use crate::store::Store;
use crate::usage::{Period, cloudevent, rfc3339};

/// Serverless YOLO object detection: a WebAssembly function behind HTTP, metered per call.
#[derive(Debug, Parser)]
#[command(name = "yolo-edge", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,
    /// State directory (tenants, keys, ledger); default `$XDG_DATA_HOME/yolo-edge` or
    /// `~/.local/share/yolo-edge`.
    #[arg(long, global = true, env = "YOLO_EDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Config file (price sheet); default `$YOLO_EDGE_CONFIG`, else `./yolo-edge.toml` if present.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// A PostgreSQL database shared by several hosts for tenants, keys and the ledger, e.g.
    /// `postgres://yolo:secret@db:5432/yolo` [database.url]; default: the SQLite file in the
    /// data directory.
    #[arg(long, global = true, env = "YOLO_EDGE_DATABASE_URL")]
    pub database_url: Option<String>,
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
    Serve(Box<ServeArgs>),
    /// Serve a Spin manifest's HTTP triggers (like `spin up`), with native wasi-nn.
    Up(Box<UpArgs>),
    /// Compose the function with a wasi-nn provider into one component (as `wac plug`).
    Compose(ComposeArgs),
    /// Snapshot the wasi-nn provider with a model loaded and optimised (for Spin: no model
    /// load per request).
    Bake(BakeArgs),
    /// Manage API keys (and create tenants).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage prepaid balances.
    #[command(subcommand)]
    Credit(CreditCommand),
    /// Print a tenant's usage.
    Usage(UsageArgs),
    /// Inspect the invocation ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Manage model directories.
    #[command(subcommand)]
    Models(ModelsCommand),
}

/// `yolo-edge models ...`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Make a model directory from an ONNX export (YOLOv5, or YOLOv8/v11 detection layout):
    /// reads Ultralytics' metadata, detects the output layout, checks the model runs once.
    Import(ImportArgs),
}

/// `yolo-edge models import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The ONNX file (e.g. an Ultralytics `yolo export format=onnx`).
    pub path: PathBuf,
    /// The model's name, its directory under --models; default: the file's stem.
    #[arg(long)]
    pub name: Option<String>,
    /// Class names, one per line (default: the model's `names` metadata).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Input size for a dynamic-shape model: `640` or `WIDTHxHEIGHT` (default: its `imgsz` metadata).
    #[arg(long, value_parser = crate::import::parse_input_size)]
    pub input_size: Option<(u32, u32)>,
    /// The models directory to write into.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Replace a model directory of the same name.
    #[arg(long)]
    pub force: bool,
    /// ONNX Runtime's shared library (file or directory), as for `serve`.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
}

/// `yolo-edge keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (and the tenant, if new). The key is printed once, alone on the last line.
    Create {
        /// Tenant name.
        #[arg(long)]
        tenant: String,
        /// Tokens to credit to the tenant.
        #[arg(long, default_value_t = 0)]
        credit: i64,
    },
    /// List keys (ids, tenants, state; never the keys themselves).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by id: requests with it get 403.
    Revoke {
        /// The key id (the part after `ye_`, as `keys list` shows).
        key_id: String,
    },
}

/// `yolo-edge credit ...`.
#[derive(Debug, Subcommand)]
pub enum CreditCommand {
    /// Add tokens to a tenant's balance.
    Add {
        /// Tenant name.
        #[arg(long)]
        tenant: String,
        /// Tokens to add (negative to take back).
        #[arg(long, allow_hyphen_values = true)]
        tokens: i64,
        /// A note kept with the credit.
        #[arg(long, default_value = "credit")]
        note: String,
    },
}

/// Output formats of `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageFormat {
    /// Per-day table with totals and the cost in the configured currency.
    Table,
    /// Per-day CSV.
    Csv,
    /// One CloudEvents 1.0 JSON object per invocation, one per line.
    Cloudevents,
    /// The JSON of `GET /v1/usage`.
    Json,
}

/// `yolo-edge usage`.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Tenant name.
    #[arg(long)]
    pub tenant: String,
    /// Start: a date (2026-11-24) or an RFC 3339 time.
    #[arg(long)]
    pub from: Option<String>,
    /// End: a date (included whole) or an RFC 3339 time (excluded).
    #[arg(long)]
    pub to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = UsageFormat::Table)]
    pub format: UsageFormat,
}

/// `yolo-edge ledger ...`.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check the hash chain and the balances; name the first row altered or removed.
    Verify,
}

/// Where wasi-nn comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WasiNn {
    /// The host's own, on ONNX Runtime.
    Host,
    /// None: the component brings it (composed with a provider).
    None,
}

/// How `up` satisfies a component's `wasi:nn` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NnProvider {
    /// Natively, with the host's wasi-nn on ONNX Runtime (the declared dependency is not used).
    Native,
    /// With the dependency the manifest declares (composed with the component at start).
    Component,
}

/// `yolo-edge serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The function component (.wasm).
    #[arg(long, default_value = "target/wasm32-wasip2/wasm/yolo_edge_function.wasm")]
    pub component: PathBuf,
    /// Directory of model directories (each with model.onnx, metadata.json, labels.txt),
    /// mounted read-only at /models.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// The model used when a request names none.
    #[arg(long, default_value = "yolov3-tiny")]
    pub default_model: String,
    /// Where wasi-nn comes from: the host, or none (a component composed with a provider).
    #[arg(long, value_enum, default_value_t = WasiNn::Host)]
    pub wasi_nn: WasiNn,
    /// Runtime settings.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `yolo-edge up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The Spin manifest.
    #[arg(default_value = "spin.toml")]
    pub manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// How a component's `wasi:nn` import is satisfied.
    #[arg(long, value_enum, default_value_t = NnProvider::Native)]
    pub nn_provider: NnProvider,
    /// Models for the native wasi-nn; default: the directory mounted at /models.
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Runtime settings.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `yolo-edge compose`.
#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// The component whose `wasi:nn` imports are to be satisfied.
    #[arg(long, default_value = "target/wasm32-wasip2/wasm/yolo_edge_function.wasm")]
    pub function: PathBuf,
    /// The component that exports `wasi:nn`; default: the provider baked with the default
    /// model (`yolo-edge bake`).
    #[arg(long, default_value = crate::bake::DEFAULT_BAKED)]
    pub provider: PathBuf,
    /// Where to write the composed component.
    #[arg(long, short)]
    pub output: PathBuf,
}

/// `yolo-edge bake`.
#[derive(Debug, clap::Args)]
pub struct BakeArgs {
    /// The wasi-nn provider component to snapshot (unbaked, as built).
    #[arg(long, default_value = crate::bake::DEFAULT_PROVIDER)]
    pub provider: PathBuf,
    /// Directory of model directories, pre-opened at /models while baking.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// The model to load into the snapshot (a directory under --models with model.onnx).
    #[arg(long, default_value = "yolov3-tiny")]
    pub model: String,
    /// Where to write the baked provider.
    #[arg(long, short, default_value = crate::bake::DEFAULT_BAKED)]
    pub output: PathBuf,
}

/// Settings shared by `serve` and `up`.
#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    /// ONNX Runtime's shared library (file or directory); default: next to this binary,
    /// then the repository's `.cache/onnxruntime/lib/`.
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Run every model on this inference engine, whatever its metadata says
    /// (`onnxruntime`, `openvino`); default: each model's `backend`, else ONNX Runtime.
    #[arg(long)]
    pub backend: Option<String>,
    /// OpenVINO's `libopenvino_c.so` (file or directory); default: next to this binary, then
    /// the set-up venv's `openvino` wheel.
    #[arg(long)]
    pub openvino: Option<PathBuf>,
    /// OpenVINO inference precision (`f32`, `bf16`); default: the CPU plugin's choice.
    #[arg(long)]
    pub openvino_precision: Option<String>,
    /// Threads of an inference that runs alone (one request then uses every core); default:
    /// one per core [inference.threads].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Inferences per model that may run at once while several requests are in flight
    /// (ONNX Runtime sessions / OpenVINO streams); default: one per core [inference.sessions].
    #[arg(long)]
    pub nn_sessions: Option<usize>,
    /// Intra-op threads of each of those ONNX Runtime sessions.
    #[arg(long, default_value_t = 1)]
    pub nn_threads: usize,
    /// Largest request body in bytes [config: limits.max_body_bytes].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Largest decoded image, in pixels [limits.max_pixels].
    #[arg(long)]
    pub max_pixels: Option<u64>,
    /// Largest linear memory of one instance, MiB [limits.max_memory_mib].
    #[arg(long)]
    pub max_memory_mib: Option<usize>,
    /// Fuel one invocation may burn [limits.fuel_per_invocation].
    #[arg(long, alias = "fuel-budget")]
    pub fuel_per_invocation: Option<u64>,
    /// Wall-clock deadline of one invocation, ms [limits.timeout_ms].
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Deadline of one inference, ms [limits.inference_timeout_ms].
    #[arg(long)]
    pub inference_timeout_ms: Option<u64>,
    /// Invocations running at once [limits.max_instances].
    #[arg(long)]
    pub max_instances: Option<u32>,
    /// Requests that may wait for a free instance [limits.queue_size].
    #[arg(long)]
    pub queue_size: Option<usize>,
    /// Longest wait for a free instance, ms [limits.queue_timeout_ms].
    #[arg(long)]
    pub queue_timeout_ms: Option<u64>,
    /// Images in one `POST /detect/batch` [limits.max_batch].
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Requests per second per tenant, 0 for no limit [tenant_limits.requests_per_second].
    #[arg(long)]
    pub tenant_rps: Option<u32>,
    /// Burst size per tenant [tenant_limits.burst].
    #[arg(long)]
    pub tenant_burst: Option<u32>,
    /// Requests in flight per tenant, 0 for no cap [tenant_limits.max_concurrent].
    #[arg(long)]
    pub tenant_max_concurrent: Option<u32>,
    /// Limits of the HTTP front [http].
    #[command(flatten)]
    pub http: crate::front::HttpArgs,
    /// Audit log: a file, `stdout` or `off` [audit.path]; default `<data dir>/audit.jsonl`.
    #[arg(long)]
    pub audit: Option<String>,
    /// Turn fuel metering off (for measuring its cost; responses then report x-fuel: 0).
    #[arg(long)]
    pub no_fuel: bool,
    /// Directory for compiled component code; default `$XDG_CACHE_HOME/yolo-edge` or `~/.cache/yolo-edge`.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Always compile the component, never use or write the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Turn the result cache off (identical requests then run again) [cache.enabled].
    #[arg(long)]
    pub no_result_cache: bool,
    /// Share the result cache through Redis, e.g. `redis://127.0.0.1:6379/0` [cache.redis_url];
    /// default: `--redis-url`.
    #[arg(long)]
    pub cache_redis_url: Option<String>,
    /// The Redis a fleet of hosts shares: per-tenant rate limits and in-flight caps, and the
    /// result cache unless `--cache-redis-url` names another, e.g. `redis://10.0.0.5:6379/0`
    /// [redis.url].
    #[arg(long, env = "YOLO_EDGE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Seconds to let in-flight requests finish on shutdown.
    #[arg(long, default_value_t = 30)]
    pub drain_seconds: u64,
    /// Shut down when standard input closes (for supervisors and test harnesses that own the process).
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
}

/// `serve` and `up`: run `plan` until shutdown, then stop the runtime without waiting for
/// blocking reads that never end (standard input).
fn serve_plan(
    runtime: tokio::runtime::Runtime,
    plan: Plan,
    args: &RuntimeArgs,
    listen: SocketAddr,
    data_dir: &Path,
    config: Config,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let served = runtime.block_on(launch(plan, args, listen, data_dir, config, config_path));
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

/// Parse the command line and run.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    let (mut config, config_path) = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        config.database.url = Some(url);
    }
    config.database.url = config.database.url.filter(|u| !u.is_empty());
    let store = || {
        // Admin commands fail at once when the database cannot be reached.
        let (url, connections) = (config.database.url.as_deref(), config.database.max_connections);
        runtime.block_on(crate::store::open(url, connections, &data_dir, Duration::ZERO))
    };
    match cli.command {
        Command::Serve(args) => {
            serve_plan(runtime, Plan::serve(&args)?, &args.runtime, args.listen, &data_dir, config, config_path)
        }
        Command::Up(args) => {
            serve_plan(runtime, Plan::up(&args)?, &args.runtime, args.listen, &data_dir, config, config_path)
        }
        Command::Compose(args) => {
            let function =
                std::fs::read(&args.function).with_context(|| format!("cannot read {}", args.function.display()))?;
            let provider =
                std::fs::read(&args.provider).with_context(|| format!("cannot read {}", args.provider.display()))?;
            let composed = crate::compose::plug(&function, &provider)?;
            std::fs::write(&args.output, &composed)
                .with_context(|| format!("cannot write {}", args.output.display()))?;
            println!(
                "wrote {} ({} bytes): {} with wasi:nn from {}",
                args.output.display(),
                composed.len(),
                args.function.display(),
                args.provider.display()
            );
            Ok(())
        }
        Command::Bake(args) => {
            let baked =
                runtime.block_on(crate::bake::bake_file(&args.provider, &args.models, &args.model, &args.output))?;
            println!(
                "wrote {} ({} bytes): {} with {:?} loaded (compile {} ms, load and optimise {} ms, snapshot {} ms)",
                args.output.display(),
                baked.wasm.len(),
                args.provider.display(),
                args.model,
                baked.compile.as_millis(),
                baked.init.as_millis(),
                baked.snapshot.as_millis()
            );
            Ok(())
        }
        Command::Keys(cmd) => runtime.block_on(keys(&*store()?, cmd)),
        Command::Credit(CreditCommand::Add { tenant, tokens, note }) => {
            let balance = runtime.block_on(store()?.add_credit(&tenant, tokens, &note))?;
            println!(
                "tenant {tenant}: balance {balance} tokens ({} {})",
                config.tokens.format(balance),
                config.tokens.currency
            );
            Ok(())
        }
        Command::Usage(args) => runtime.block_on(usage(&*store()?, &config, args)),
        Command::Ledger(LedgerCommand::Verify) => runtime.block_on(verify(&*store()?)),
        Command::Models(ModelsCommand::Import(args)) => {
            crate::nn::onnx::init_runtime(args.onnxruntime.as_deref())?;
            let imported = crate::import::import(&crate::import::ImportOptions {
                source: args.path,
                name: args.name,
                labels: args.labels,
                input_size: args.input_size,
                models: args.models,
                force: args.force,
            })?;
            println!("{imported}");
            Ok(())
        }
    }
}

async fn keys(db: &dyn Store, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { tenant, credit } => {
            let key = db.create_key(&tenant, credit).await?;
            let balance = db.balance(&tenant).await?.unwrap_or(0);
            println!("created key {} for tenant {tenant} (balance {balance} tokens); it is shown only once:", key.id);
            println!("{}", key.key);
        }
        KeysCommand::List { tenant } => {
            println!("{:<18} {:<20} {:<22} state", "key id", "tenant", "created");
            for k in db.list_keys(tenant.as_deref()).await? {
                let state = k.revoked_us.map_or("active".to_owned(), |t| format!("revoked {}", rfc3339(t)));
                println!("{:<18} {:<20} {:<22} {state}", k.id, k.tenant, rfc3339(k.created_us));
            }
        }
        KeysCommand::Revoke { key_id } => {
            db.revoke_key(&key_id).await?;
            println!("revoked key {key_id}");
        }
    }
    Ok(())
}

async fn usage(db: &dyn Store, config: &Config, args: UsageArgs) -> anyhow::Result<()> {
    let period = Period::parse(args.from.as_deref(), args.to.as_deref()).map_err(anyhow::Error::msg)?;
    if db.balance(&args.tenant).await?.is_none() {
        anyhow::bail!("no tenant {:?}", args.tenant);
    }
    match args.format {
        UsageFormat::Table => {
            let report = db.usage(&args.tenant, period).await?;
            print!("{}", report.table(|t| format!("{} {}", config.tokens.format(t), config.tokens.currency)));
        }
        UsageFormat::Csv => print!("{}", db.usage(&args.tenant, period).await?.csv()),
        UsageFormat::Json => println!("{}", serde_json::to_string_pretty(&db.usage(&args.tenant, period).await?)?),
        UsageFormat::Cloudevents => {
            for row in db.invocations(&args.tenant, period.from_us, period.to_us).await? {
                println!("{}", cloudevent(&row));
            }
        }
    }
    Ok(())
}

async fn verify(db: &dyn Store) -> anyhow::Result<()> {
    let report = db.verify().await?;
    match report.problem {
        None => {
            println!("ledger ok: {} rows, chain intact, balances consistent; head {}", report.rows, report.head);
            Ok(())
        }
        Some(problem) => anyhow::bail!("ledger verification failed: {problem}"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Resolves on SIGINT, SIGTERM, or (when asked) end of standard input.
pub(crate) async fn shutdown_signal(on_stdin_eof: bool) {
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
