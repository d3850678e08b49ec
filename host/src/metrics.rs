//! Prometheus metrics (`GET /metrics`, text format), through the `prometheus` crate.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
    exponential_buckets,
};

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    /// `yolo_edge_requests_total{route, status}`.
    pub requests: IntCounterVec,
    /// `yolo_edge_invocation_seconds{route}`: whole invocations (wall time).
    pub invocation_seconds: HistogramVec,
    /// `yolo_edge_inference_seconds{route}`: time inside wasi-nn compute per invocation.
    pub inference_seconds: HistogramVec,
    /// `yolo_edge_tokens_total{tenant}`.
    pub tokens: IntCounterVec,
    /// `yolo_edge_fuel_total{tenant}`.
    pub fuel: IntCounterVec,
    /// `yolo_edge_refused_total{reason}`: requests turned away before execution.
    pub refused: IntCounterVec,
    /// `yolo_edge_cache_hits_total{tenant}`.
    pub cache_hits: IntCounterVec,
    /// `yolo_edge_queue_depth`: requests waiting for an instance slot.
    pub queue_depth: IntGauge,
    /// `yolo_edge_busy_instances`: instance slots in use.
    pub busy_instances: IntGauge,
    /// `yolo_edge_limits_redis_errors_total`: Redis calls of the shared tenant limits that
    /// failed or timed out.
    pub limits_redis_errors: IntCounter,
    /// `yolo_edge_limits_fallback_total`: tenant limit checks decided by this host alone
    /// because the shared Redis was unavailable.
    pub limits_fallbacks: IntCounter,
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("yolo_edge".into()), None)?;
        let latency = exponential_buckets(0.005, 2.0, 12)?; // 5 ms .. ~10 s
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("requests_total", "HTTP requests by route and status"),
                &["route", "status"],
            )?,
            invocation_seconds: HistogramVec::new(
                HistogramOpts::new("invocation_seconds", "Wall time of invocations").buckets(latency.clone()),
                &["route"],
            )?,
            inference_seconds: HistogramVec::new(
                HistogramOpts::new("inference_seconds", "Time inside wasi-nn compute per invocation").buckets(latency),
                &["route"],
            )?,
            tokens: IntCounterVec::new(Opts::new("tokens_total", "Tokens billed"), &["tenant"])?,
            fuel: IntCounterVec::new(Opts::new("fuel_total", "Guest fuel consumed"), &["tenant"])?,
            refused: IntCounterVec::new(Opts::new("refused_total", "Requests refused before execution"), &["reason"])?,
            cache_hits: IntCounterVec::new(
                Opts::new("cache_hits_total", "Answers served from the cache"),
                &["tenant"],
            )?,
            queue_depth: IntGauge::new("queue_depth", "Requests waiting for an instance slot")?,
            busy_instances: IntGauge::new("busy_instances", "Instance slots in use")?,
            limits_redis_errors: IntCounter::new(
                "limits_redis_errors_total",
                "Redis calls of the shared tenant limits that failed or timed out",
            )?,
            limits_fallbacks: IntCounter::new(
                "limits_fallback_total",
                "Tenant limit checks decided by this host alone because Redis was unavailable",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.invocation_seconds.clone()))?;
        m.registry.register(Box::new(m.inference_seconds.clone()))?;
        m.registry.register(Box::new(m.tokens.clone()))?;
        m.registry.register(Box::new(m.fuel.clone()))?;
        m.registry.register(Box::new(m.refused.clone()))?;
        m.registry.register(Box::new(m.cache_hits.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.busy_instances.clone()))?;
        m.registry.register(Box::new(m.limits_redis_errors.clone()))?;
        m.registry.register(Box::new(m.limits_fallbacks.clone()))?;
        Ok(m)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new().unwrap();
        m.requests.with_label_values(&["/detect", "200"]).inc();
        m.tokens.with_label_values(&["acme"]).inc_by(1007);
        m.invocation_seconds.with_label_values(&["/detect"]).observe(0.1);
        let text = m.render();
        assert!(text.contains("yolo_edge_requests_total{route=\"/detect\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("yolo_edge_tokens_total{tenant=\"acme\"} 1007"));
        assert!(text.contains("yolo_edge_invocation_seconds_bucket"));
    }
}
