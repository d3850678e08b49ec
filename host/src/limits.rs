//! Overload protection: instance slots with a bounded wait queue (503 beyond it), and
//! per-tenant rate and concurrency limits (429). Everything here is decided before an
//! invocation starts, so what it refuses costs the tenant nothing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::TenantLimits;

/// Why a request was turned away, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// All slots busy and the queue full or too slow (503).
    Overloaded {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The tenant's rate limit (429).
    RateLimited {
        /// When the bucket has a token again.
        retry_after: Duration,
    },
    /// The tenant's concurrency cap (429).
    ConcurrencyLimited,
}

impl Refusal {
    /// `Retry-After` in whole seconds (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let d = match self {
            Self::Overloaded { retry_after } | Self::RateLimited { retry_after } => *retry_after,
            Self::ConcurrencyLimited => Duration::from_secs(1),
        };
        d.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// Instance slots: at most `max` invocations run; up to `queue_size` more wait up to
/// `timeout` for one.
pub struct Slots {
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
    max: usize,
    queue_size: usize,
    timeout: Duration,
}

/// A held slot; released on drop.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Clears the waiting count when the wait ends, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Slots {
    /// `max` slots, a queue of `queue_size`, waits of at most `timeout`.
    pub fn new(max: usize, queue_size: usize, timeout: Duration) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max.max(1))),
            waiting: AtomicUsize::new(0),
            max: max.max(1),
            queue_size,
            timeout,
        }
    }

    /// Take a slot, waiting in the queue if needed.
    pub async fn acquire(&self) -> Result<Slot, Refusal> {
        if let Ok(permit) = self.semaphore.clone().try_acquire_owned() {
            return Ok(Slot(permit));
        }
        let overloaded = Refusal::Overloaded { retry_after: self.timeout.max(Duration::from_secs(1)) };
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue_size {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(overloaded);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.timeout, self.semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            _ => Err(overloaded),
        }
    }

    /// Requests waiting for a slot now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Slots in use now.
    pub fn busy(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

/// Per-tenant token buckets (`governor`, keyed by tenant) and in-flight counts.
pub struct TenantGate {
    rate: Option<DefaultKeyedRateLimiter<String>>,
    max_concurrent: usize,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// One of a tenant's in-flight requests; the count drops with it.
pub struct TenantTicket {
    tenant: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for TenantTicket {
    fn drop(&mut self) {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

impl TenantGate {
    /// Gate with these limits (0 turns a limit off).
    pub fn new(limits: TenantLimits) -> Self {
        let rate = NonZeroU32::new(limits.requests_per_second).map(|rps| {
            let burst = NonZeroU32::new(limits.burst).unwrap_or(rps);
            RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))
        });
        Self { rate, max_concurrent: limits.max_concurrent as usize, in_flight: Arc::default() }
    }

    /// Admit one request of `tenant` (its rate, then its in-flight cap), or say why not.
    pub fn admit(&self, tenant: &str) -> Result<TenantTicket, Refusal> {
        self.check_rate(tenant)?;
        self.enter(tenant)
    }

    /// Count one request against `tenant`'s rate limit.
    pub fn check_rate(&self, tenant: &str) -> Result<(), Refusal> {
        if let Some(rate) = &self.rate
            && let Err(not_until) = rate.check_key(&tenant.to_owned())
        {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Refusal::RateLimited { retry_after });
        }
        Ok(())
    }

    /// Take a place among `tenant`'s requests in flight (held until the ticket drops).
    pub fn enter(&self, tenant: &str) -> Result<TenantTicket, Refusal> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(tenant.to_owned()).or_insert(0);
        if self.max_concurrent > 0 && *n >= self.max_concurrent {
            return Err(Refusal::ConcurrencyLimited);
        }
        *n += 1;
        Ok(TenantTicket { tenant: tenant.to_owned(), in_flight: self.in_flight.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_queue_then_refuse() {
        let slots = Arc::new(Slots::new(1, 1, Duration::from_millis(200)));
        let first = slots.acquire().await.unwrap();
        assert_eq!(slots.busy(), 1);
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire().await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(slots.queue_depth(), 1);
        assert!(matches!(slots.acquire().await, Err(Refusal::Overloaded { .. })), "the queue is full");
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()), "the waiter got the slot");
        let _held = slots.acquire().await.unwrap();
        let started = std::time::Instant::now();
        assert!(slots.acquire().await.is_err(), "waited too long");
        assert!(started.elapsed() >= Duration::from_millis(190));
        assert_eq!(slots.queue_depth(), 0);
    }

    #[test]
    fn tenants_are_rate_limited_and_capped_separately() {
        let gate = TenantGate::new(TenantLimits { requests_per_second: 1, burst: 2, max_concurrent: 10 });
        let _a = gate.admit("a").unwrap();
        let _b = gate.admit("a").unwrap();
        let refused = gate.admit("a").err().unwrap();
        assert!(matches!(refused, Refusal::RateLimited { .. }));
        assert!(refused.retry_after_secs() >= 1);
        assert!(gate.admit("b").is_ok(), "another tenant has its own bucket");

        let gate = TenantGate::new(TenantLimits { requests_per_second: 0, burst: 0, max_concurrent: 2 });
        let one = gate.admit("a").unwrap();
        let _two = gate.admit("a").unwrap();
        assert_eq!(gate.admit("a").err(), Some(Refusal::ConcurrencyLimited));
        drop(one);
        assert!(gate.admit("a").is_ok(), "a finished request frees its place");
    }
}
