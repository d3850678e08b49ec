//! Putting a server together: what to serve (a [`Plan`]: components by route, from `serve`'s
//! flags or a Spin manifest for `up`), then ONNX Runtime, the models, the engine, the
//! components, the state, the limits — and serving until a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::audit::AuditLog;
use crate::cache::{ModelIds, ResultCache};
use crate::cli::{NnProvider, RuntimeArgs, ServeArgs, UpArgs, WasiNn, shutdown_signal};
use crate::config::{Config, Inference, Limits, TenantLimits};
use crate::engine::{EngineOptions, build_engine, build_linker, default_cache_dir, load_component_bytes};
use crate::idempotency::Idempotency;
use crate::invoke::{Invoker, InvokerOptions};
use crate::limits::{SharedLimitCounters, Slots, TenantGate, lease_for};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::nn::onnx::init_runtime;
use crate::nn::registry::{BackendKind, BackendOptions, GraphRegistry};
use crate::redis_link::RedisLink;
use crate::server::{App, Routes, serve};
use crate::state::GUEST_MODELS_DIR;

/// One component to serve.
pub struct PlannedComponent {
    /// Its route (Spin syntax).
    pub route: String,
    /// What it is called in logs.
    pub label: String,
    /// The component's bytes (composed already, when a provider is plugged in).
    pub wasm: Vec<u8>,
    /// Read-only mounts.
    pub mounts: Vec<(PathBuf, String)>,
    /// Environment.
    pub env: Vec<(String, String)>,
}

/// What a server serves.
pub struct Plan {
    /// Components, most specific route first.
    pub components: Vec<PlannedComponent>,
    /// Whether the host provides wasi-nn.
    pub host_nn: bool,
    /// Models for the host's wasi-nn.
    pub models: Option<PathBuf>,
    /// A model that must be loaded (`serve --default-model`).
    pub required_model: Option<String>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .with_context(|| format!("cannot read the {what} {} (build it with `cargo xtask run`)", path.display()))
}

impl Plan {
    /// `serve`: the one function component on every path, the models at /models.
    pub fn serve(args: &ServeArgs) -> anyhow::Result<Self> {
        let models = args.models.canonicalize().with_context(|| format!("cannot open {}", args.models.display()))?;
        Ok(Self {
            components: vec![PlannedComponent {
                route: "/...".to_owned(),
                label: args.component.display().to_string(),
                wasm: read(&args.component, "component")?,
                mounts: vec![(models.clone(), GUEST_MODELS_DIR.to_owned())],
                env: vec![("YOLO_EDGE_DEFAULT_MODEL".to_owned(), args.default_model.clone())],
            }],
            host_nn: args.wasi_nn == WasiNn::Host,
            models: Some(models),
            required_model: (args.wasi_nn == WasiNn::Host).then(|| args.default_model.clone()),
        })
    }

    /// `up`: a Spin manifest's HTTP triggers. With `--nn-provider component`, each
    /// component is composed with its declared `wasi:nn` dependency.
    pub fn up(args: &UpArgs) -> anyhow::Result<Self> {
        let manifest = Manifest::load(&args.manifest)?;
        let base = args.manifest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = base.canonicalize().with_context(|| format!("cannot open {}", base.display()))?;
        let mut components = Vec::new();
        let mut models = args.models.clone();
        for route in manifest.routes() {
            let c = manifest.resolve(&route.component, &base)?;
            let mut wasm = read(&c.source, "component")?;
            if args.nn_provider == NnProvider::Component {
                for (import, provider) in &c.dependencies {
                    tracing::info!(component = %c.id, %import, provider = %provider.display(), "composing with the declared provider");
                    wasm = crate::compose::plug(&wasm, &read(provider, "dependency")?)
                        .with_context(|| format!("component {:?}: cannot compose {import:?}", c.id))?;
                }
            }
            if models.is_none() {
                models = c.mounts.iter().find(|(_, guest)| guest == GUEST_MODELS_DIR).map(|(host, _)| host.clone());
            }
            for (host, _) in &c.mounts {
                anyhow::ensure!(
                    host.is_dir(),
                    "component {:?}: the mounted directory {} does not exist",
                    c.id,
                    host.display()
                );
            }
            if !c.variables.is_empty() {
                tracing::warn!(component = %c.id, "component variables are resolved but yolo-edge up does not provide the Spin variables interface");
            }
            components.push(PlannedComponent {
                route: route.route.clone(),
                label: format!("{} ({})", c.id, c.source.display()),
                wasm,
                mounts: c.mounts,
                env: c.environment,
            });
        }
        anyhow::ensure!(!components.is_empty(), "{} has no HTTP route to serve", args.manifest.display());
        Ok(Self { components, host_nn: args.nn_provider == NnProvider::Native, models, required_model: None })
    }
}

impl RuntimeArgs {
    /// The configured limits with this command line's overrides applied.
    pub fn limits(&self, config: &Config) -> (Limits, TenantLimits) {
        let mut l = config.limits;
        let mut t = config.tenant_limits;
        macro_rules! over {
            ($target:expr, $flag:expr) => {
                if let Some(v) = $flag {
                    $target = v;
                }
            };
        }
        over!(l.max_body_bytes, self.max_body_bytes);
        over!(l.max_pixels, self.max_pixels);
        over!(l.max_memory_mib, self.max_memory_mib);
        over!(l.fuel_per_invocation, self.fuel_per_invocation);
        over!(l.timeout_ms, self.timeout_ms);
        over!(l.inference_timeout_ms, self.inference_timeout_ms);
        over!(l.max_instances, self.max_instances);
        over!(l.queue_size, self.queue_size);
        over!(l.queue_timeout_ms, self.queue_timeout_ms);
        over!(l.max_batch, self.max_batch);
        over!(t.requests_per_second, self.tenant_rps);
        over!(t.burst, self.tenant_burst);
        over!(t.max_concurrent, self.tenant_max_concurrent);
        (l, t)
    }
}

/// The graphs the host's wasi-nn serves (none without host wasi-nn).
fn registry(plan: &Plan, args: &RuntimeArgs, inference: Inference) -> anyhow::Result<GraphRegistry> {
    let mut options = BackendOptions::default();
    let configured = |flag: Option<usize>, key: usize| flag.or((key > 0).then_some(key));
    if let Some(n) = configured(args.nn_sessions, inference.sessions) {
        options.onnx.sessions = n.max(1);
        options.openvino.requests = n.max(1);
    }
    if let Some(n) = configured(args.threads, inference.threads) {
        options.onnx.threads = n.max(1);
        options.openvino.threads = n.max(1);
    }
    options.onnx.session_threads = args.nn_threads.max(1);
    options.openvino.precision = args.openvino_precision.clone();
    options.force = match &args.backend {
        None => None,
        Some(name) => Some(
            BackendKind::parse(name)
                .ok_or_else(|| anyhow::anyhow!("unknown backend {name:?}: use onnxruntime or openvino"))?,
        ),
    };
    if !plan.host_nn {
        return Ok(GraphRegistry::new(options));
    }
    let ort = init_runtime(args.onnxruntime.as_deref())?;
    tracing::info!(library = %ort.display(), "ONNX Runtime opened");
    let Some(dir) = &plan.models else {
        tracing::warn!("no models directory: wasi-nn load-by-name will find nothing");
        return Ok(GraphRegistry::new(options));
    };
    let open_openvino = || {
        let lib = crate::nn::openvino::init_runtime(args.openvino.as_deref())?;
        tracing::info!(library = %lib.display(), "OpenVINO opened");
        Ok(())
    };
    let registry = GraphRegistry::load_dir(dir, options, &open_openvino)?;
    if registry.names().is_empty() {
        anyhow::bail!(
            "no model found in {} (each model is a directory with metadata.json and model.onnx); run `cargo xtask run` to set up the default model",
            dir.display()
        );
    }
    if let Some(required) = &plan.required_model
        && !registry.names().contains(required)
    {
        anyhow::bail!(
            "the default model {required:?} is not in {} (found: {})",
            dir.display(),
            registry.names().join(", ")
        );
    }
    Ok(registry)
}

/// Build everything a plan needs and serve it on `listen` until SIGINT / SIGTERM.
pub async fn launch(
    plan: Plan,
    args: &RuntimeArgs,
    listen: SocketAddr,
    data_dir: &Path,
    config: Config,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    // A host may start before its database does (a fleet and its PostgreSQL starting together).
    let patience = Duration::from_secs(60);
    let store =
        crate::store::open(config.database.url.as_deref(), config.database.max_connections, data_dir, patience).await?;
    tracing::info!(
        database = %store.describe(),
        config = %config_path.as_deref().map_or("(built-in defaults)".to_owned(), |p| p.display().to_string()),
        per_call = config.pricing.per_call,
        "state and prices"
    );
    // The Redis a fleet shares: the tenant limits, and the result cache unless it names its own.
    let fleet_redis = match args.redis_url.as_ref().or(config.redis.url.as_ref()).filter(|u| !u.is_empty()) {
        Some(url) => Some(Arc::new(RedisLink::open(url, "[redis] url / --redis-url").await?)),
        None => None,
    };
    let mut cache_config = config.cache.clone();
    if args.no_result_cache {
        cache_config.enabled = false;
    }
    if let Some(url) = &args.cache_redis_url {
        cache_config.redis_url = Some(url.clone());
    }
    let cache = ResultCache::open(&cache_config, fleet_redis.as_ref()).await?;
    tracing::info!(cache = %cache.describe(), "result cache");
    // The models' fingerprints (cache keys) are hashed while the models load.
    let scan =
        plan.models.clone().filter(|_| cache.enabled()).map(|dir| std::thread::spawn(move || ModelIds::scan(&dir)));
    let registry = Arc::new(registry(&plan, args, config.inference)?);
    let scanned = scan.map(|s| s.join().unwrap_or_default()).unwrap_or_default();
    let model_ids = ModelIds::new(scanned, |name| format!("{:?}", registry.backend_of(name)));

    let (limits, tenant_limits) = args.limits(&config);
    let max_memory_bytes = limits.max_memory_mib << 20;
    // Slots for the billed invocations, as many again for finished ones whose stores are
    // still being released off the response path (`invoke::release`), and a few for /healthz
    // probes.
    let pool = limits.max_instances.saturating_mul(2).saturating_add(4);
    let engine = build_engine(&EngineOptions { max_instances: pool, max_memory_bytes, fuel: !args.no_fuel })?;
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(default_cache_dir) };
    let linker = build_linker(&engine, plan.host_nn)?;
    let mut routes = Vec::new();
    for c in plan.components {
        let loaded = load_component_bytes(&engine, &c.wasm, cache_dir.as_deref())?;
        tracing::info!(component = %c.label, route = %c.route, cached = loaded.cached, ms = loaded.took.as_millis() as u64, "component ready");
        let mut env = c.env;
        for (name, value) in [
            ("YOLO_EDGE_MAX_BODY_BYTES", limits.max_body_bytes.to_string()),
            ("YOLO_EDGE_MAX_PIXELS", limits.max_pixels.to_string()),
            ("YOLO_EDGE_MAX_BATCH", limits.max_batch.to_string()),
        ] {
            if !env.iter().any(|(k, _)| k == name) {
                env.push((name.to_owned(), value));
            }
        }
        let options = InvokerOptions {
            mounts: c.mounts,
            env,
            fuel_budget: limits.fuel_per_invocation,
            fuel: !args.no_fuel,
            max_memory_bytes,
            timeout: Duration::from_millis(limits.timeout_ms),
            inference_timeout: Duration::from_millis(limits.inference_timeout_ms),
            component_sha256: crate::cache::sha256_hex(&c.wasm),
        };
        let invoker = Invoker::new(&linker, &loaded.component, registry.clone(), options)
            .with_context(|| format!("cannot prepare {}", c.label))?;
        routes.push((c.route, invoker));
    }
    let audit_target = args
        .audit
        .clone()
        .or_else(|| config.audit.path.clone())
        .unwrap_or_else(|| data_dir.join("audit.jsonl").display().to_string());
    let audit = AuditLog::open(&audit_target)?;
    tracing::info!(?limits, ?tenant_limits, http = ?args.http.apply(config.http), audit = %audit_target, "limits");
    // A request's longest life: its wait for a slot, its invocation, and time to record it.
    let longest_request =
        lease_for(Duration::from_millis(limits.timeout_ms), Duration::from_millis(limits.queue_timeout_ms));
    let metrics = Metrics::new()?;
    let tenants = match &fleet_redis {
        None => TenantGate::new(tenant_limits),
        Some(link) => {
            let lease = longest_request;
            let counters = SharedLimitCounters {
                redis_errors: metrics.limits_redis_errors.clone(),
                fallbacks: metrics.limits_fallbacks.clone(),
            };
            TenantGate::shared(tenant_limits, link.clone(), lease, counters)
        }
    };
    tracing::info!(kept = %tenants.describe(), "tenant limits");
    let app = Arc::new(App {
        routes: Routes::new(routes),
        max_body_bytes: limits.max_body_bytes,
        http: args.http.apply(config.http),
        store,
        // A repeat waits for another host's run of its key at most as long as a request can last.
        idempotency: Idempotency::new(longest_request),
        config,
        slots: Slots::new(
            limits.max_instances as usize,
            limits.queue_size,
            Duration::from_millis(limits.queue_timeout_ms),
        ),
        tenants,
        metrics,
        audit,
        cache,
        model_ids,
    });

    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // The one line on stdout: scripts and tests read the address from it.
    println!("yolo-edge listening on http://{addr}");
    serve(listener, app, shutdown_signal(args.exit_on_stdin_eof), Duration::from_secs(args.drain_seconds)).await
}
