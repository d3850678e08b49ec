//! The flags of `serve` and `up` (clap), and how they become [`Settings`]: the config file's
//! values first, then each flag given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use yolo_edge_nn::registry::BackendKind;

use crate::cache::CacheScope;
use crate::config::Config;
use crate::front::HttpLimits;
use crate::launch::Plan;
use crate::settings::Settings;

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
    pub http: HttpArgs,
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
    /// Whose calls a cached answer is given to: `tenant` (its own tenant's only, the default)
    /// or `shared` (anyone's: a deployment with one owner) [cache.scope].
    #[arg(long, value_parser = ["tenant", "shared"])]
    pub cache_scope: Option<String>,
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

impl ServeArgs {
    /// What `serve` serves: the component on every path.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        Plan::serve(&self.component, &self.models, &self.default_model, self.wasi_nn == WasiNn::Host)
    }
}

impl UpArgs {
    /// What `up` serves: the manifest's HTTP triggers.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        Plan::up(&self.manifest, self.models.clone(), self.nn_provider == NnProvider::Component)
    }
}

impl RuntimeArgs {
    /// The settings of a server on `listen` with state in `data_dir`: `config`'s, with every
    /// flag given applied over them.
    pub fn settings(
        &self,
        config: Config,
        config_path: Option<PathBuf>,
        listen: SocketAddr,
        data_dir: PathBuf,
    ) -> anyhow::Result<Settings> {
        let mut s = Settings::from_config(config, config_path, listen, data_dir);
        macro_rules! over {
            ($target:expr, $flag:expr) => {
                if let Some(v) = $flag {
                    $target = v;
                }
            };
        }
        let (l, t) = (&mut s.limits, &mut s.tenant_limits);
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
        s.http = self.http.apply(s.http);
        s.set_inference(self.nn_sessions, self.threads);
        let nn = &mut s.nn;
        nn.onnx.session_threads = self.nn_threads.max(1);
        nn.openvino.precision.clone_from(&self.openvino_precision);
        nn.force = match &self.backend {
            None => None,
            Some(name) => Some(
                BackendKind::parse(name)
                    .ok_or_else(|| anyhow::anyhow!("unknown backend {name:?}: use onnxruntime or openvino"))?,
            ),
        };
        s.onnxruntime.clone_from(&self.onnxruntime);
        s.openvino.clone_from(&self.openvino);
        if self.no_result_cache {
            s.cache.enabled = false;
        }
        if let Some(url) = &self.cache_redis_url {
            s.cache.redis_url = Some(url.clone());
        }
        match self.cache_scope.as_deref() {
            Some("shared") => s.cache.scope = CacheScope::Shared,
            Some(_) => s.cache.scope = CacheScope::Tenant,
            None => {}
        }
        // `--redis-url ""` (or an empty `$YOLO_EDGE_REDIS_URL`) turns the file's Redis off.
        if let Some(url) = &self.redis_url {
            s.redis_url = Some(url.clone()).filter(|u| !u.is_empty());
        }
        over!(s.audit, self.audit.clone());
        s.fuel = !self.no_fuel;
        if self.no_cache {
            s.code_cache = None;
        } else if let Some(dir) = &self.cache_dir {
            s.code_cache = Some(dir.clone());
        }
        s.drain = Duration::from_secs(self.drain_seconds);
        s.exit_on_stdin_eof = self.exit_on_stdin_eof;
        Ok(s)
    }
}

/// The `serve` / `up` flags of `[http]`.
#[derive(Debug, Default, clap::Args)]
pub struct HttpArgs {
    /// Largest request head, bytes; then 431 [http.max_header_bytes].
    #[arg(long)]
    pub max_header_bytes: Option<usize>,
    /// Most header fields in a request; then 431 [http.max_headers].
    #[arg(long)]
    pub max_headers: Option<usize>,
    /// Longest time to receive a request head (and to keep an idle connection), ms
    /// [http.header_read_timeout_ms].
    #[arg(long)]
    pub header_read_timeout_ms: Option<u64>,
    /// Longest wait for the next piece of a request body, ms; then 408 [http.body_read_timeout_ms].
    #[arg(long)]
    pub body_read_timeout_ms: Option<u64>,
    /// Longest time to receive a whole request body, ms; then 408 [http.body_timeout_ms].
    #[arg(long)]
    pub body_timeout_ms: Option<u64>,
    /// Open connections at once (plus 16 reserved for /healthz) [http.max_connections].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Bytes of a refused body read (and dropped) after the answer [http.drain_max_bytes].
    #[arg(long)]
    pub drain_max_bytes: Option<u64>,
    /// Longest time spent reading a refused body after the answer, ms [http.drain_timeout_ms].
    #[arg(long)]
    pub drain_timeout_ms: Option<u64>,
}

impl HttpArgs {
    /// `config` with these flags applied.
    pub fn apply(&self, config: HttpLimits) -> HttpLimits {
        let mut l = config;
        macro_rules! over {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    l.$field = v;
                }
            )*};
        }
        over!(
            max_header_bytes,
            max_headers,
            header_read_timeout_ms,
            body_read_timeout_ms,
            body_timeout_ms,
            max_connections,
            drain_max_bytes,
            drain_timeout_ms
        );
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let args = HttpArgs { max_headers: Some(7), body_read_timeout_ms: Some(5), ..HttpArgs::default() };
        let l = args.apply(HttpLimits::default());
        assert_eq!((l.max_headers, l.body_read_timeout_ms), (7, 5));
        assert_eq!(l.max_header_bytes, 16 << 10);
    }

    /// `serve`'s flags as clap parses them, after the config file's `text`.
    fn resolve(text: &str, flags: &[&str]) -> anyhow::Result<Settings> {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            runtime: RuntimeArgs,
        }
        let args = Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).unwrap();
        let config = Config::parse(text).unwrap();
        args.runtime.settings(config, None, "127.0.0.1:0".parse().unwrap(), PathBuf::from("/data"))
    }

    fn settings(text: &str, flags: &[&str]) -> Settings {
        resolve(text, flags).unwrap()
    }

    #[test]
    fn every_flag_overrides_its_file_key_and_the_rest_stays() {
        let file = "[limits]\ntimeout_ms = 500\nqueue_size = 3\n[tenant_limits]\nburst = 9\n\
                    [redis]\nurl = \"redis://file:6379/0\"\n[audit]\npath = \"stdout\"\n[inference]\nsessions = 3\n";
        let s = settings(file, &[]);
        assert_eq!((s.limits.timeout_ms, s.limits.queue_size, s.tenant_limits.burst), (500, 3, 9));
        assert_eq!(
            (s.redis_url.as_deref(), s.audit.as_str(), s.nn.onnx.sessions),
            (Some("redis://file:6379/0"), "stdout", 3)
        );
        assert!(s.fuel && s.cache.enabled && s.nn.force.is_none());
        let s = settings(
            file,
            &["--timeout-ms", "7", "--tenant-burst", "2", "--redis-url", "", "--audit", "off", "--nn-sessions", "5"],
        );
        assert_eq!((s.limits.timeout_ms, s.limits.queue_size, s.tenant_limits.burst), (7, 3, 2));
        assert_eq!((s.redis_url, s.audit.as_str(), s.nn.onnx.sessions, s.nn.openvino.requests), (None, "off", 5, 5));
        let s = settings(file, &["--no-fuel", "--no-result-cache", "--no-cache", "--backend", "openvino"]);
        assert!(!s.fuel && !s.cache.enabled && s.code_cache.is_none());
        assert_eq!(s.nn.force, Some(BackendKind::OpenVino));
        let unknown = resolve(file, &["--backend", "tensorflow"]).unwrap_err().to_string();
        assert!(unknown.contains("unknown backend \"tensorflow\""), "{unknown}");
    }
}
