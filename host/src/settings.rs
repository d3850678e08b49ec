//! [`Settings`]: what a server runs with, resolved once from `yolo-edge.toml` (or its
//! defaults), the environment and the command line, then only borrowed. The command line
//! ([`crate::cli`]) builds it; [`crate::launch`] reads it and never sees a flag.
//!
//! Precedence, for every setting that has both: a flag, else its environment variable (the
//! flags that have one: `--database-url`, `--redis-url`, `--data-dir`), else the file, else
//! the built-in default. Each flag's help names the file key it overrides (`[limits.timeout_ms]`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use yolo_edge_ledger::DatabaseConfig;
use yolo_edge_nn::registry::BackendOptions;

use crate::cache::CacheConfig;
use crate::config::{Billing, Config, Limits};
use crate::front::HttpLimits;
use crate::limits::{TenantLimits, lease_for};
use crate::pricing::PriceSheet;

/// Everything `serve` and `up` need besides what to serve (the [`crate::launch::Plan`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// State directory (the SQLite ledger, the audit log by default).
    pub data_dir: PathBuf,
    /// The config file read, if any (for the log).
    pub config_path: Option<PathBuf>,
    /// Prices, in tokens.
    pub pricing: PriceSheet,
    /// How balances are held while calls run.
    pub billing: Billing,
    /// Host-wide limits.
    pub limits: Limits,
    /// Per-tenant limits.
    pub tenant_limits: TenantLimits,
    /// Limits of the HTTP front.
    pub http: HttpLimits,
    /// Where tenants, keys and the ledger live.
    pub database: DatabaseConfig,
    /// The result cache (`--no-result-cache` and `--cache-redis-url` applied).
    pub cache: CacheConfig,
    /// The Redis a fleet shares, if any.
    pub redis_url: Option<String>,
    /// The audit log: a file, `stdout` or `off`.
    pub audit: String,
    /// Inference: sessions, threads, precision, a forced backend.
    pub nn: BackendOptions,
    /// ONNX Runtime's shared library, if given.
    pub onnxruntime: Option<PathBuf>,
    /// OpenVINO's C library, if given.
    pub openvino: Option<PathBuf>,
    /// Whether fuel is metered.
    pub fuel: bool,
    /// Where compiled component code is cached; `None`: always compile.
    pub code_cache: Option<PathBuf>,
    /// How long in-flight requests may finish on shutdown.
    pub drain: Duration,
    /// Shut down when standard input closes.
    pub exit_on_stdin_eof: bool,
}

impl Settings {
    /// The settings a `config` file gives, before any flag, for a server on `listen` keeping
    /// its state in `data_dir`. The flags then override fields of the result.
    pub fn from_config(config: Config, config_path: Option<PathBuf>, listen: SocketAddr, data_dir: PathBuf) -> Self {
        let inference = config.inference;
        let audit = config.audit.path.unwrap_or_else(|| data_dir.join("audit.jsonl").display().to_string());
        let mut settings = Self {
            listen,
            data_dir,
            config_path,
            pricing: config.pricing,
            billing: config.billing,
            limits: config.limits,
            tenant_limits: config.tenant_limits,
            http: config.http,
            database: config.database,
            cache: config.cache,
            redis_url: config.redis.url.filter(|u| !u.is_empty()),
            audit,
            nn: BackendOptions::default(),
            onnxruntime: None,
            openvino: None,
            fuel: true,
            code_cache: crate::engine::default_cache_dir(),
            drain: Duration::from_secs(30),
            exit_on_stdin_eof: false,
        };
        // 0 in the file: the backends' own default, one per core.
        settings.set_inference(
            (inference.sessions > 0).then_some(inference.sessions),
            (inference.threads > 0).then_some(inference.threads),
        );
        settings
    }

    /// Every backend runs up to `sessions` inferences per model at once under load, and a lone
    /// inference on `threads` threads (each at least 1); `None` keeps what is set.
    pub fn set_inference(&mut self, sessions: Option<usize>, threads: Option<usize>) {
        let nn = &mut self.nn;
        if let Some(n) = sessions.map(|n| n.max(1)) {
            nn.onnx.sessions = n;
            nn.openvino.requests = n;
        }
        if let Some(n) = threads.map(|n| n.max(1)) {
            nn.onnx.threads = n;
            nn.openvino.threads = n;
        }
    }

    /// How long a call's hold may stay open: twice a request's longest life and a minute,
    /// so that only a hold whose host died is ever freed by its lease.
    pub fn hold_lease(&self) -> Duration {
        self.longest_request() * 2 + Duration::from_secs(60)
    }

    /// A request's longest life: its wait for a slot, its invocation, and time to record it.
    pub fn longest_request(&self) -> Duration {
        lease_for(Duration::from_millis(self.limits.timeout_ms), Duration::from_millis(self.limits.queue_timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_fills_the_settings() {
        let config = Config::parse(
            "[inference]\nsessions = 3\nthreads = 2\n[limits]\ntimeout_ms = 500\nqueue_timeout_ms = 250\n[redis]\nurl = \"\"\n",
        )
        .unwrap();
        let s = Settings::from_config(config, None, "127.0.0.1:0".parse().unwrap(), PathBuf::from("/data"));
        assert_eq!((s.nn.onnx.sessions, s.nn.openvino.requests, s.nn.onnx.threads), (3, 3, 2));
        assert_eq!(s.audit, "/data/audit.jsonl");
        assert_eq!(s.redis_url, None, "an empty URL is no Redis");
        assert_eq!(s.longest_request(), Duration::from_millis(750) + crate::limits::LEASE_MARGIN);
    }
}
