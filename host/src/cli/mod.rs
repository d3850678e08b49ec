//! The `yolo-edge` command line (clap): the commands and their flags. `serve` and `up` turn
//! their flags into [`crate::settings::Settings`] ([`args`]) and hand them to
//! [`crate::launch`]; the admin commands (`admin`) talk to the store.

mod admin;
pub mod args;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use self::admin::{keys, usage, verify};
use self::args::{ServeArgs, UpArgs};
use crate::config::Config;
use crate::launch::{Plan, launch};
use crate::settings::Settings;

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
    #[arg(long, value_parser = yolo_edge_nn::import::parse_input_size)]
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

/// `serve` and `up`: run `plan` until shutdown, then stop the runtime without waiting for
/// blocking reads that never end (standard input).
fn serve_plan(runtime: tokio::runtime::Runtime, plan: Plan, settings: &Settings) -> anyhow::Result<()> {
    let served = runtime.block_on(launch(plan, settings));
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
        runtime.block_on(yolo_edge_ledger::open(url, connections, &data_dir, Duration::ZERO))
    };
    match cli.command {
        Command::Serve(args) => {
            let settings = args.runtime.settings(config, config_path, args.listen, data_dir.clone())?;
            serve_plan(runtime, args.plan()?, &settings)
        }
        Command::Up(args) => {
            let settings = args.runtime.settings(config, config_path, args.listen, data_dir.clone())?;
            serve_plan(runtime, args.plan()?, &settings)
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
            yolo_edge_nn::onnx::init_runtime(args.onnxruntime.as_deref())?;
            let imported = yolo_edge_nn::import::import(&yolo_edge_nn::import::ImportOptions {
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The default data directory: `$XDG_DATA_HOME/yolo-edge`, else `~/.local/share/yolo-edge`,
/// else `./yolo-edge-data`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map_or_else(|| PathBuf::from("yolo-edge-data"), |d| d.join("yolo-edge"))
}
