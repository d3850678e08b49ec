//! [`App`]: the handles every request borrows (components by route, the store, the limits,
//! the cache, metrics and the audit log), built once by [`crate::launch`] and never changed.

use std::sync::Arc;

use yolo_edge_ledger::Store;

use crate::audit::AuditLog;
use crate::cache::{CacheScope, ModelIds, ResultCache};
use crate::front::HttpLimits;
use crate::holds::HoldSizer;
use crate::idempotency::Idempotency;
use crate::invoke::Invoker;
use crate::limits::{Slots, TenantGate};
use crate::metrics::Metrics;
use crate::pricing::PriceSheet;

/// Everything a request needs, shared by all connections.
pub struct App {
    /// The components, by route.
    pub routes: Routes,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// Limits of the HTTP front: headers, body deadlines, connections.
    pub http: HttpLimits,
    /// Tenants, keys, ledger: SQLite or PostgreSQL.
    pub store: Arc<dyn Store>,
    /// Prices, in tokens.
    pub pricing: PriceSheet,
    /// How much of a balance each call holds while it runs.
    pub holds: HoldSizer,
    /// How long a hold may stay open before any host frees it (a host died mid-call).
    pub hold_lease: std::time::Duration,
    /// Requests in flight per idempotency key.
    pub idempotency: Idempotency,
    /// Instance slots and their wait queue.
    pub slots: Slots,
    /// Per-tenant rate and concurrency limits.
    pub tenants: TenantGate,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The audit log.
    pub audit: AuditLog,
    /// The result cache.
    pub cache: ResultCache,
    /// Whose calls its entries answer.
    pub cache_scope: CacheScope,
    /// The models' fingerprints, part of every cache key.
    pub model_ids: ModelIds,
}

/// Components by HTTP route (Spin route syntax), most specific first.
pub struct Routes(Vec<(String, Arc<Invoker>)>);

impl Routes {
    /// Routes in the order given (put exact paths before prefixes, longer prefixes first).
    pub fn new(entries: Vec<(String, Invoker)>) -> Self {
        Self(entries.into_iter().map(|(route, invoker)| (route, Arc::new(invoker))).collect())
    }

    /// The component serving `path` (shared with the task that runs the request).
    pub fn find(&self, path: &str) -> Option<Arc<Invoker>> {
        self.0.iter().find(|(route, _)| crate::manifest::route_matches(route, path)).map(|(_, i)| i.clone())
    }
}
