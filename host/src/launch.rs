//! Putting a server together: what to serve (a [`Plan`]: components by route, for `serve` or
//! from a Spin manifest for `up`), then, from the [`Settings`], ONNX Runtime, the models, the
//! engine, the components, the state, the limits — and serving until a signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;
use yolo_edge_nn::onnx::init_runtime;
use yolo_edge_nn::registry::GraphRegistry;

use crate::app::{App, Routes};
use crate::audit::AuditLog;
use crate::cache::{ModelIds, ResultCache};
use crate::engine::{EngineOptions, build_engine, build_linker, load_component_bytes};
use crate::holds::HoldSizer;
use crate::idempotency::Idempotency;
use crate::invoke::{Invoker, InvokerOptions};
use crate::limits::{SharedLimitCounters, Slots, TenantGate};
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::redis_link::RedisLink;
use crate::server::serve;
use crate::settings::Settings;
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
    /// `serve`: the one function `component` on every path, the `models` directory at
    /// /models, `default_model` for requests that name none; the host's wasi-nn unless
    /// `host_nn` is false (a component composed with a provider).
    pub fn serve(component: &Path, models: &Path, default_model: &str, host_nn: bool) -> anyhow::Result<Self> {
        let models = models.canonicalize().with_context(|| format!("cannot open {}", models.display()))?;
        Ok(Self {
            components: vec![PlannedComponent {
                route: "/...".to_owned(),
                label: component.display().to_string(),
                wasm: read(component, "component")?,
                mounts: vec![(models.clone(), GUEST_MODELS_DIR.to_owned())],
                env: vec![("YOLO_EDGE_DEFAULT_MODEL".to_owned(), default_model.to_owned())],
            }],
            host_nn,
            models: Some(models),
            required_model: host_nn.then(|| default_model.to_owned()),
        })
    }

    /// `up`: a Spin manifest's HTTP triggers, with `models` for the host's wasi-nn (default:
    /// the directory mounted at /models). With `compose_providers`, each component is composed
    /// with its declared `wasi:nn` dependency instead.
    pub fn up(manifest_path: &Path, mut models: Option<PathBuf>, compose_providers: bool) -> anyhow::Result<Self> {
        let manifest = Manifest::load(manifest_path)?;
        let base = manifest_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = base.canonicalize().with_context(|| format!("cannot open {}", base.display()))?;
        let mut components = Vec::new();
        for route in manifest.routes() {
            let c = manifest.resolve(&route.component, &base)?;
            let mut wasm = read(&c.source, "component")?;
            if compose_providers {
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
        anyhow::ensure!(!components.is_empty(), "{} has no HTTP route to serve", manifest_path.display());
        Ok(Self { components, host_nn: !compose_providers, models, required_model: None })
    }
}

/// The graphs the host's wasi-nn serves (none without host wasi-nn).
fn registry(plan: &Plan, settings: &Settings) -> anyhow::Result<GraphRegistry> {
    let options = settings.nn.clone();
    if !plan.host_nn {
        return Ok(GraphRegistry::new(options));
    }
    let ort = init_runtime(settings.onnxruntime.as_deref())?;
    tracing::info!(library = %ort.display(), "ONNX Runtime opened");
    let Some(dir) = &plan.models else {
        tracing::warn!("no models directory: wasi-nn load-by-name will find nothing");
        return Ok(GraphRegistry::new(options));
    };
    let open_openvino = || {
        let lib = yolo_edge_nn::openvino::init_runtime(settings.openvino.as_deref())?;
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

/// Build everything a plan needs and serve it until SIGINT / SIGTERM.
pub async fn launch(plan: Plan, settings: &Settings) -> anyhow::Result<()> {
    let app = build(plan, settings).await?;
    let listen = settings.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // The one line on stdout: scripts and tests read the address from it.
    println!("yolo-edge listening on http://{addr}");
    serve(listener, app, shutdown_signal(settings.exit_on_stdin_eof), settings.drain).await
}

/// Everything a plan needs, ready to answer requests ([`crate::server::handle`]): the store,
/// the cache, the models, the engine and the components, the limits, metrics and audit log.
pub async fn build(plan: Plan, settings: &Settings) -> anyhow::Result<Arc<App>> {
    // A host may start before its database does (a fleet and its PostgreSQL starting together).
    let patience = Duration::from_secs(60);
    let db = &settings.database;
    let store = yolo_edge_ledger::open(db.url.as_deref(), db.max_connections, &settings.data_dir, patience).await?;
    tracing::info!(
        database = %store.describe(),
        config = %settings.config_path.as_deref().map_or("(built-in defaults)".to_owned(), |p| p.display().to_string()),
        per_call = settings.pricing.per_call,
        "state and prices"
    );
    let hold_lease = settings.hold_lease();
    // One host serves an SQLite ledger, so at its start every open hold is one its previous
    // run left (killed mid-call): all are released. Hosts sharing PostgreSQL release the holds
    // whose lease has passed, at start and every few seconds while they run.
    let stale_before = if db.url.is_none() { i64::MAX } else { yolo_edge_ledger::now_us() };
    let released = store.release_expired_holds(stale_before).await.context("cannot release stale holds")?;
    if released > 0 {
        tracing::info!(released, "released the holds of calls a stopped host left open");
    }
    tokio::spawn(sweep_holds(store.clone()));
    // The Redis a fleet shares: the tenant limits, and the result cache unless it names its own.
    let fleet_redis = match &settings.redis_url {
        Some(url) => Some(Arc::new(RedisLink::open(url, "[redis] url / --redis-url").await?)),
        None => None,
    };
    let cache = ResultCache::open(&settings.cache, fleet_redis.as_ref()).await?;
    tracing::info!(cache = %cache.describe(), "result cache");
    // The models' fingerprints (cache keys) are hashed while the models load.
    let scan =
        plan.models.clone().filter(|_| cache.enabled()).map(|dir| std::thread::spawn(move || ModelIds::scan(&dir)));
    let registry = Arc::new(registry(&plan, settings)?);
    let scanned = scan.map(|s| s.join().unwrap_or_default()).unwrap_or_default();
    let model_ids = ModelIds::new(scanned, |name| format!("{:?}", registry.backend_of(name)));

    let (limits, tenant_limits) = (settings.limits, settings.tenant_limits);
    let max_memory_bytes = limits.max_memory_mib << 20;
    // Slots for the billed invocations, as many again for finished ones whose stores are
    // still being released off the response path (`invoke::release`), and a few for /healthz
    // probes.
    let pool = limits.max_instances.saturating_mul(2).saturating_add(4);
    let engine = build_engine(&EngineOptions { max_instances: pool, max_memory_bytes, fuel: settings.fuel })?;
    let cache_dir = settings.code_cache.as_deref();
    let linker = build_linker(&engine, plan.host_nn)?;
    let mut routes = Vec::new();
    for c in plan.components {
        let loaded = load_component_bytes(&engine, &c.wasm, cache_dir)?;
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
            fuel: settings.fuel,
            max_memory_bytes,
            timeout: Duration::from_millis(limits.timeout_ms),
            inference_timeout: Duration::from_millis(limits.inference_timeout_ms),
            component_sha256: crate::cache::sha256_hex(&c.wasm),
        };
        let invoker = Invoker::new(&linker, &loaded.component, registry.clone(), options)
            .with_context(|| format!("cannot prepare {}", c.label))?;
        routes.push((c.route, invoker));
    }
    let audit = AuditLog::open(&settings.audit)?;
    tracing::info!(?limits, ?tenant_limits, http = ?settings.http, audit = %settings.audit, "limits");
    let longest_request = settings.longest_request();
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
    Ok(Arc::new(App {
        routes: Routes::new(routes),
        max_body_bytes: limits.max_body_bytes,
        http: settings.http,
        store,
        // A repeat waits for another host's run of its key at most as long as a request can last.
        idempotency: Idempotency::new(longest_request),
        pricing: settings.pricing,
        holds: HoldSizer::new(settings.pricing.per_call, settings.billing.hold_tokens),
        hold_lease,
        slots: Slots::new(
            limits.max_instances as usize,
            limits.queue_size,
            Duration::from_millis(limits.queue_timeout_ms),
        ),
        tenants,
        metrics,
        audit,
        cache,
        cache_scope: settings.cache.scope,
        model_ids,
    }))
}

/// How often a host releases the holds whose lease has passed.
const HOLD_SWEEP: Duration = Duration::from_secs(5);

/// Release expired holds every [`HOLD_SWEEP`] (those of hosts that died mid-call), for as long
/// as the process runs.
async fn sweep_holds(store: Arc<dyn yolo_edge_ledger::Store>) {
    let mut tick = tokio::time::interval(HOLD_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.release_expired_holds(yolo_edge_ledger::now_us()).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "released holds whose lease had passed"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot release expired holds; retrying"),
        }
    }
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
