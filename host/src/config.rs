//! `yolo-edge.toml`: the price sheet (and, as they come, other operator settings).
//!
//! Looked up at `--config PATH`, else `$YOLO_EDGE_CONFIG`, else `./yolo-edge.toml` when it
//! exists; without a file the defaults below apply (they are the repository's
//! `yolo-edge.toml`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::limits::TenantLimits;
use crate::pricing::{PriceSheet, TokenValue};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What one token is worth, for reports.
    #[serde(default)]
    pub tokens: TokenValue,
    /// Prices, in tokens.
    #[serde(default)]
    pub pricing: PriceSheet,
    /// How prepaid balances are reserved while calls run.
    #[serde(default)]
    pub billing: Billing,
    /// Limits protecting the host (command-line flags override them).
    #[serde(default)]
    pub limits: Limits,
    /// Per-tenant limits.
    #[serde(default)]
    pub tenant_limits: TenantLimits,
    /// Limits of the HTTP front: header size and count, body deadlines, connections.
    #[serde(default)]
    pub http: crate::front::HttpLimits,
    /// Where the audit log goes.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Inference threading.
    #[serde(default)]
    pub inference: Inference,
    /// The result cache.
    #[serde(default)]
    pub cache: crate::cache::CacheConfig,
    /// Where tenants, keys and the ledger live (SQLite by default, or a shared PostgreSQL).
    #[serde(default)]
    pub database: yolo_edge_ledger::DatabaseConfig,
    /// The Redis a fleet of hosts shares (tenant limits, and the result cache by default).
    #[serde(default)]
    pub redis: crate::redis_link::RedisConfig,
}

/// How inference uses the cores (command-line flags override it): an inference that runs
/// alone uses `threads` threads; while other invocations are in flight, each inference runs
/// on one of `sessions` single-threaded sessions (or OpenVINO streams).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inference {
    /// Threads of an inference that runs alone; 0: one per core.
    pub threads: usize,
    /// Single-threaded inferences per model that may run at once under load; 0: one per core.
    pub sessions: usize,
}

/// `[billing]`: how much of a balance a running call holds ([`crate::holds`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Billing {
    /// Every call holds this many tokens while it runs; unset: the largest price of recent
    /// calls on the same route (at least `per_call`).
    pub hold_tokens: Option<u64>,
}

/// Host-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, bytes (413 before any instance exists).
    pub max_body_bytes: usize,
    /// Largest decoded image, pixels (413 before decoding).
    pub max_pixels: u64,
    /// Largest linear memory of one instance, MiB.
    pub max_memory_mib: usize,
    /// Fuel one invocation may burn (then 504 `fuel_exhausted`).
    pub fuel_per_invocation: u64,
    /// Wall-clock deadline of one invocation, ms (then 504 `function_timeout`).
    pub timeout_ms: u64,
    /// Deadline of one wasi-nn `compute`, ms (the backend run is stopped, the guest gets a
    /// wasi-nn `timeout` error and answers 504 `inference_timeout`).
    pub inference_timeout_ms: u64,
    /// Invocations running at once (instance slots).
    pub max_instances: u32,
    /// Requests that may wait for a slot; more get 503.
    pub queue_size: usize,
    /// How long a request may wait for a slot, ms; then 503.
    pub queue_timeout_ms: u64,
    /// Images in one `POST /detect/batch`; more get 413.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 << 20,
            max_pixels: 40_000_000,
            max_memory_mib: 1024,
            fuel_per_invocation: 200_000_000_000,
            timeout_ms: 30_000,
            inference_timeout_ms: 10_000,
            max_instances: 16,
            queue_size: 256,
            queue_timeout_ms: 10_000,
            max_batch: yolo_core::batch::DEFAULT_MAX_BATCH,
        }
    }
}

/// The audit log: one JSON line per request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `"stdout"`, `"off"`, or a file path (appended to). Default: `<data dir>/audit.jsonl`.
    pub path: Option<String>,
}

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "YOLO_EDGE_CONFIG";
/// The file looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "yolo-edge.toml";

impl Config {
    /// Parse TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.tokens.validate()?;
        Ok(config)
    }

    /// Load the configuration: `explicit`, else `$YOLO_EDGE_CONFIG`, else `./yolo-edge.toml`
    /// if present, else the defaults. Returns the file used, if any.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let path = explicit
            .map(Path::to_owned)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()));
        let Some(path) = path else {
            return Ok((Self::default(), None));
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let config = Self::parse(&text).with_context(|| format!("{} is not a valid config file", path.display()))?;
        Ok((config, Some(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_config_is_the_default() {
        let text = include_str!("../../yolo-edge.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn limits_parse() {
        let c = Config::parse("[limits]\ntimeout_ms = 5\n[tenant_limits]\nburst = 3\n[audit]\npath = \"stdout\"\n")
            .unwrap();
        assert_eq!(c.limits.timeout_ms, 5);
        assert_eq!(c.limits.max_body_bytes, 20 << 20);
        assert_eq!(c.tenant_limits.burst, 3);
        assert_eq!(c.audit.path.as_deref(), Some("stdout"));
        assert!(Config::parse("[limits]\ntimeout = 5\n").is_err());
    }

    #[test]
    fn partial_files_fill_in_defaults_and_typos_are_refused() {
        let c = Config::parse("[pricing]\nper_call = 7\n").unwrap();
        assert_eq!(c.pricing.per_call, 7);
        assert_eq!(c.pricing.per_gb_second, PriceSheet::default().per_gb_second);
        assert!(Config::parse("[pricing]\nper_cal = 7\n").is_err());
        assert!(Config::parse("[pricing]\nper_call = -1\n").is_err());
        assert!(Config::parse("[pricing]\nper_call = 0.5\n").is_err(), "tokens are integers");
        assert!(Config::parse("[tokens]\nvalue = \"abc\"\n").is_err());
    }

    #[test]
    fn the_http_section_parses_with_defaults_and_refuses_typos() {
        let c = Config::parse("[http]\nmax_headers = 7\nmax_connections = 3\n").unwrap();
        assert_eq!((c.http.max_headers, c.http.max_connections), (7, 3));
        assert_eq!(c.http.body_read_timeout_ms, crate::front::HttpLimits::default().body_read_timeout_ms);
        assert!(Config::parse("[http]\nmax_header = 7\n").is_err());
    }
}
