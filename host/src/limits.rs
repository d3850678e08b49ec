//! Overload protection: instance slots with a bounded wait queue (503 beyond it), and
//! per-tenant rate and concurrency limits (429), kept by each host or shared by a fleet
//! through Redis ([`TenantGate`]). Everything here is decided before an invocation starts,
//! so what it refuses costs the tenant nothing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::redis_link::{RedisLink, Unavailable};
use serde::Deserialize;

/// Limits applied to each tenant separately (429 when exceeded, nothing billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Sustained requests per second (token bucket refill); 0 turns the rate limit off.
    pub requests_per_second: u32,
    /// Bucket size: requests allowed in a burst.
    pub burst: u32,
    /// Requests of one tenant in flight at once; 0 means no cap.
    pub max_concurrent: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self { requests_per_second: 50, burst: 100, max_concurrent: 16 }
    }
}

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

/// Counters of the shared mode: `yolo_edge_limits_redis_errors_total` (Redis calls that failed
/// or timed out) and `yolo_edge_limits_fallback_total` (checks decided by this host alone
/// because Redis was unavailable).
#[derive(Clone)]
pub struct SharedLimitCounters {
    /// Redis calls of the limits that failed or timed out.
    pub redis_errors: prometheus::IntCounter,
    /// Checks decided locally because Redis was unavailable.
    pub fallbacks: prometheus::IntCounter,
}

/// Redis keys of the shared limits: `yolo-edge:limits:v1:rate:<tenant>` (the time at which
/// the tenant's bucket is full again) and `yolo-edge:limits:v1:inflight:<tenant>` (a sorted
/// set of the tenant's requests in flight, scored by when their lease ends).
pub const REDIS_PREFIX: &str = "yolo-edge:limits:v1:";

/// How long a limit check waits for Redis before deciding locally.
pub const REDIS_DEADLINE: Duration = Duration::from_millis(200);

/// Added to the longest a request can hold its in-flight place (queue wait + invocation) to
/// make its lease in Redis: covers the body-free work around them (idempotency claim, cache
/// lookup, ledger commit).
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// The lease of a shared in-flight place: a host that dies holding one (SIGKILL, power loss)
/// leaks it for at most this long. Longer than the longest request: `queue_timeout` +
/// `invocation_timeout` + [`LEASE_MARGIN`].
pub fn lease_for(invocation_timeout: Duration, queue_timeout: Duration) -> Duration {
    invocation_timeout + queue_timeout + LEASE_MARGIN
}

/// GCRA (a token bucket as one timestamp): KEYS[1] holds the theoretical arrival time (TAT,
/// µs of Redis server time); ARGV[1] is the emission interval (µs per request), ARGV[2] the
/// burst. Answers 0 when the request conforms (and counts it), else the µs to wait.
const RATE_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
return 0
";

/// A place among a tenant's requests in flight: KEYS[1] is a sorted set of ticket ids scored
/// by lease end (ms of Redis server time); ARGV[1] the ticket id, ARGV[2] the cap, ARGV[3]
/// the lease in ms. Expired leases are dropped first. Answers 1 when taken, 0 when full.
const ENTER_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[1])
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', lease))
return 1
";

static RATE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RATE_SCRIPT));
static ENTER: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ENTER_SCRIPT));

/// The shared mode: where and how long.
struct Shared {
    link: Arc<RedisLink>,
    lease: Duration,
    counters: SharedLimitCounters,
}

impl Shared {
    fn fell_back(&self, what: &str, tenant: &str, e: &Unavailable) {
        self.counters.fallbacks.inc();
        if !matches!(e, Unavailable::Down) {
            self.counters.redis_errors.inc();
        }
        tracing::debug!(tenant, error = %e, "{what} decided by this host alone: Redis is unavailable");
    }
}

/// Per-tenant rate limits (token buckets) and in-flight caps.
///
/// Local by default: `governor` keyed buckets and in-process counts, each host on its own.
/// Shared with [`TenantGate::shared`]: one bucket (GCRA, a Lua script on Redis server time)
/// and one in-flight set (leased places) per tenant in Redis, so a fleet behind a load
/// balancer enforces each limit once. When Redis is unavailable a check is decided by this
/// host's local limiter instead (so a fleet of N hosts then allows up to N times the limits)
/// and counted; an outage of Redis never refuses a request by itself.
pub struct TenantGate {
    rate: Option<DefaultKeyedRateLimiter<String>>,
    /// Emission interval (µs per request) and burst of the rate limit, for Redis.
    gcra: Option<(u64, u32)>,
    max_concurrent: usize,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    shared: Option<Shared>,
}

/// One of a tenant's in-flight requests; its place is given back when it drops.
pub struct TenantTicket {
    tenant: String,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    _shared: Option<SharedTicket>,
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

/// A place in a tenant's in-flight set in Redis, removed (in the background) on drop; a
/// place that cannot be removed ends with its lease.
struct SharedTicket {
    connection: redis::aio::ConnectionManager,
    key: String,
    id: String,
}

impl SharedTicket {
    fn release(connection: redis::aio::ConnectionManager, key: String, id: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let mut c = connection;
            let removed: redis::RedisResult<i64> = redis::cmd("ZREM").arg(&key).arg(&id).query_async(&mut c).await;
            if let Err(e) = removed {
                tracing::debug!(error = %e, "cannot release a shared in-flight place: it ends with its lease");
            }
        });
    }
}

impl Drop for SharedTicket {
    fn drop(&mut self) {
        Self::release(self.connection.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.id));
    }
}

impl TenantGate {
    /// Gate with these limits (0 turns a limit off), kept by this host alone.
    pub fn new(limits: TenantLimits) -> Self {
        let rate = NonZeroU32::new(limits.requests_per_second).map(|rps| {
            let burst = NonZeroU32::new(limits.burst).unwrap_or(rps);
            (rps, burst)
        });
        Self {
            gcra: rate.map(|(rps, burst)| ((1_000_000 / u64::from(rps.get())).max(1), burst.get())),
            rate: rate.map(|(rps, burst)| RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))),
            max_concurrent: limits.max_concurrent as usize,
            in_flight: Arc::default(),
            shared: None,
        }
    }

    /// Gate with these limits shared by every host on `link`; an in-flight place is leased for
    /// `lease` (see [`lease_for`]).
    pub fn shared(limits: TenantLimits, link: Arc<RedisLink>, lease: Duration, counters: SharedLimitCounters) -> Self {
        Self {
            shared: Some(Shared { link, lease: lease.max(Duration::from_millis(1)), counters }),
            ..Self::new(limits)
        }
    }

    /// Where the limits are kept, for the log.
    pub fn describe(&self) -> String {
        match &self.shared {
            None => "local (each host on its own)".to_owned(),
            Some(s) => format!("shared through Redis at {} (in-flight lease {:?})", s.link.shown(), s.lease),
        }
    }

    /// Admit one request of `tenant` (its rate, then its in-flight cap), or say why not.
    pub async fn admit(&self, tenant: &str) -> Result<TenantTicket, Refusal> {
        self.check_rate(tenant).await?;
        self.enter(tenant).await
    }

    /// Count one request against `tenant`'s rate limit.
    pub async fn check_rate(&self, tenant: &str) -> Result<(), Refusal> {
        let (Some(rate), Some((interval_us, burst))) = (&self.rate, self.gcra) else { return Ok(()) };
        if let Some(shared) = &self.shared {
            let mut invocation = RATE.key(format!("{REDIS_PREFIX}rate:{tenant}"));
            invocation.arg(interval_us).arg(burst);
            let waited = shared
                .link
                .call(REDIS_DEADLINE, |mut c| async move { invocation.invoke_async::<u64>(&mut c).await })
                .await;
            match waited {
                Ok(0) => return Ok(()),
                Ok(wait_us) => return Err(Refusal::RateLimited { retry_after: Duration::from_micros(wait_us) }),
                Err(e) => shared.fell_back("a rate limit", tenant, &e),
            }
        }
        if let Err(not_until) = rate.check_key(&tenant.to_owned()) {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Refusal::RateLimited { retry_after });
        }
        Ok(())
    }

    /// Take a place among `tenant`'s requests in flight (held until the ticket drops).
    pub async fn enter(&self, tenant: &str) -> Result<TenantTicket, Refusal> {
        // This host's own count is kept in both modes: it never exceeds the shared one, and
        // it is what a check decides on when Redis is unavailable.
        let mut ticket = self.enter_local(tenant)?;
        let Some(shared) = self.shared.as_ref().filter(|_| self.max_concurrent > 0) else { return Ok(ticket) };
        let key = format!("{REDIS_PREFIX}inflight:{tenant}");
        let id = Uuid::now_v7().simple().to_string();
        let mut invocation = ENTER.key(&key);
        invocation.arg(&id).arg(self.max_concurrent).arg(u64::try_from(shared.lease.as_millis()).unwrap_or(u64::MAX));
        let entered =
            shared.link.call(REDIS_DEADLINE, |mut c| async move { invocation.invoke_async::<i64>(&mut c).await }).await;
        match entered {
            Ok(1) => {
                ticket._shared = Some(SharedTicket { connection: shared.link.connection(), key, id });
                Ok(ticket)
            }
            Ok(_) => Err(Refusal::ConcurrencyLimited),
            Err(e) => {
                if matches!(e, Unavailable::Timeout(_)) {
                    // The script may have run after all: give the place back rather than
                    // leave it to its lease.
                    SharedTicket::release(shared.link.connection(), key, id);
                }
                shared.fell_back("an in-flight cap", tenant, &e);
                Ok(ticket)
            }
        }
    }

    fn enter_local(&self, tenant: &str) -> Result<TenantTicket, Refusal> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(tenant.to_owned()).or_insert(0);
        if self.max_concurrent > 0 && *n >= self.max_concurrent {
            return Err(Refusal::ConcurrencyLimited);
        }
        *n += 1;
        Ok(TenantTicket { tenant: tenant.to_owned(), in_flight: self.in_flight.clone(), _shared: None })
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

    #[tokio::test]
    async fn tenants_are_rate_limited_and_capped_separately() {
        let gate = TenantGate::new(TenantLimits { requests_per_second: 1, burst: 2, max_concurrent: 10 });
        let _a = gate.admit("a").await.unwrap();
        let _b = gate.admit("a").await.unwrap();
        let refused = gate.admit("a").await.err().unwrap();
        assert!(matches!(refused, Refusal::RateLimited { .. }));
        assert!(refused.retry_after_secs() >= 1);
        assert!(gate.admit("b").await.is_ok(), "another tenant has its own bucket");

        let gate = TenantGate::new(TenantLimits { requests_per_second: 0, burst: 0, max_concurrent: 2 });
        let one = gate.admit("a").await.unwrap();
        let _two = gate.admit("a").await.unwrap();
        assert_eq!(gate.admit("a").await.err(), Some(Refusal::ConcurrencyLimited));
        drop(one);
        assert!(gate.admit("a").await.is_ok(), "a finished request frees its place");
    }

    /// The shared mode against a real `redis-server` (Debian's package, which `cargo xtask
    /// test` installs), on a free loopback port, without persistence.
    mod redis_backed {
        use std::io::{Read as _, Write as _};
        use std::process::{Child, Command, Stdio};

        use super::*;

        struct Server {
            child: Child,
            url: String,
        }

        impl Server {
            fn start() -> Self {
                // A free port (the listener closes at the end of this statement).
                let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                Self::start_on(port)
            }

            fn start_on(port: u16) -> Self {
                let log = std::env::temp_dir().join(format!("yolo-edge-limits-redis-{port}.log"));
                let mut child = Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
                    .arg("--logfile")
                    .arg(&log)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("redis-server (Debian's package; `cargo xtask test` installs it)");
                let started = std::time::Instant::now();
                loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        let log = std::fs::read_to_string(&log).unwrap_or_default();
                        panic!("redis-server on port {port} exited ({status}): {log}");
                    }
                    let pong = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(1)))?;
                        s.write_all(b"PING\r\n")?;
                        let mut buf = [0u8; 7];
                        s.read_exact(&mut buf)?;
                        Ok(buf)
                    });
                    if pong.is_ok_and(|b| &b == b"+PONG\r\n") {
                        return Self { child, url: format!("redis://127.0.0.1:{port}/0") };
                    }
                    assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }

        impl Drop for Server {
            fn drop(&mut self) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }

        fn counters() -> SharedLimitCounters {
            SharedLimitCounters {
                redis_errors: prometheus::IntCounter::new("e", "e").unwrap(),
                fallbacks: prometheus::IntCounter::new("f", "f").unwrap(),
            }
        }

        /// Two gates on one Redis: two hosts of a fleet.
        async fn two_hosts(
            url: &str,
            limits: TenantLimits,
            lease: Duration,
        ) -> (TenantGate, TenantGate, SharedLimitCounters) {
            let c = counters();
            let link = |c: SharedLimitCounters| async move {
                let link = Arc::new(RedisLink::open(url, "test").await.unwrap());
                TenantGate::shared(limits, link, lease, c)
            };
            (link(c.clone()).await, link(c.clone()).await, c)
        }

        fn tenant(name: &str) -> String {
            format!("{name}-{}", Uuid::now_v7().simple())
        }

        #[tokio::test]
        async fn a_fleet_shares_one_bucket_and_one_in_flight_cap() {
            let redis = Server::start();
            let limits = TenantLimits { requests_per_second: 2, burst: 5, max_concurrent: 0 };
            let (a, b, counters) = two_hosts(&redis.url, limits, Duration::from_secs(60)).await;
            let t = tenant("rate");
            let mut admitted = 0;
            for i in 0..8 {
                let gate = if i % 2 == 0 { &a } else { &b };
                match gate.check_rate(&t).await {
                    Ok(()) => admitted += 1,
                    Err(Refusal::RateLimited { retry_after }) => {
                        assert!(
                            retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500),
                            "{retry_after:?}"
                        );
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            assert_eq!(admitted, 5, "the burst, once for both hosts");
            assert!(b.check_rate(&tenant("other")).await.is_ok(), "another tenant has its own bucket");
            tokio::time::sleep(Duration::from_millis(550)).await;
            assert!(a.check_rate(&t).await.is_ok(), "one request per 500 ms refills");
            assert!(b.check_rate(&t).await.is_err(), "only one");

            let limits = TenantLimits { requests_per_second: 0, burst: 0, max_concurrent: 3 };
            let (a, b, _) = two_hosts(&redis.url, limits, Duration::from_secs(60)).await;
            let t = tenant("cap");
            let one = a.enter(&t).await.unwrap();
            let _two = b.enter(&t).await.unwrap();
            let _three = a.enter(&t).await.unwrap();
            assert_eq!(b.enter(&t).await.err(), Some(Refusal::ConcurrencyLimited), "the cap counts both hosts");
            assert_eq!(a.enter(&t).await.err(), Some(Refusal::ConcurrencyLimited));
            drop(one);
            tokio::time::sleep(Duration::from_millis(50)).await; // the release runs in the background
            let _four = b.enter(&t).await.expect("a finished request on one host frees a place on the other");
            assert_eq!(counters.redis_errors.get(), 0);
            assert_eq!(counters.fallbacks.get(), 0);
        }

        #[tokio::test]
        async fn the_place_of_a_host_that_died_ends_with_its_lease() {
            let redis = Server::start();
            let limits = TenantLimits { requests_per_second: 0, burst: 0, max_concurrent: 1 };
            let (a, b, _) = two_hosts(&redis.url, limits, Duration::from_millis(400)).await;
            let t = tenant("lease");
            // A host killed mid-request never releases its place.
            std::mem::forget(a.enter(&t).await.unwrap());
            assert_eq!(b.enter(&t).await.err(), Some(Refusal::ConcurrencyLimited));
            tokio::time::sleep(Duration::from_millis(450)).await;
            assert!(b.enter(&t).await.is_ok(), "the lease ended");
        }

        #[tokio::test]
        async fn without_redis_each_host_decides_alone() {
            let redis = Server::start();
            let limits = TenantLimits { requests_per_second: 1, burst: 2, max_concurrent: 1 };
            let (a, b, counters) = two_hosts(&redis.url, limits, Duration::from_secs(60)).await;
            let t = tenant("down");
            assert!(a.check_rate(&t).await.is_ok());
            let port: u16 = redis.url.trim_end_matches("/0").rsplit(':').next().unwrap().parse().unwrap();
            drop(redis);
            let started = std::time::Instant::now();
            // Redis has counted one request; this host's own bucket still has its burst.
            assert!(a.check_rate(&t).await.is_ok());
            assert!(a.check_rate(&t).await.is_ok());
            assert!(matches!(a.check_rate(&t).await, Err(Refusal::RateLimited { .. })), "the local bucket is empty");
            let held = a.enter(&t).await.expect("decided locally");
            assert_eq!(a.enter(&t).await.err(), Some(Refusal::ConcurrencyLimited), "this host's own count");
            drop(held);
            assert!(a.enter(&t).await.is_ok());
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "no request waits on a dead Redis: {:?}",
                started.elapsed()
            );
            assert!(counters.redis_errors.get() >= 1, "the first failure is an error");
            assert!(counters.fallbacks.get() >= 5, "every check fell back: {}", counters.fallbacks.get());

            // Redis is back (same address): within a few seconds the checks are shared again.
            let _again = Server::start_on(port);
            for gate in [&a, &b] {
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    tokio::time::sleep(RedisLink::RETRY_AFTER + Duration::from_millis(100)).await;
                    let before = counters.fallbacks.get();
                    assert!(gate.check_rate(&tenant("probe")).await.is_ok());
                    if counters.fallbacks.get() == before {
                        break;
                    }
                    assert!(std::time::Instant::now() < deadline, "Redis never came back");
                }
            }
            let t = tenant("back");
            assert!(a.check_rate(&t).await.is_ok());
            assert!(b.check_rate(&t).await.is_ok(), "the second of the burst of 2, on the other host");
            assert!(matches!(b.check_rate(&t).await, Err(Refusal::RateLimited { .. })), "shared again");
        }

        /// What a shared check adds to a request (printed; `--nocapture` shows it).
        #[tokio::test]
        async fn a_shared_check_costs_a_round_trip() {
            let redis = Server::start();
            let limits = TenantLimits { requests_per_second: 1_000_000, burst: 1_000_000, max_concurrent: 1_000 };
            let (a, _, counters) = two_hosts(&redis.url, limits, Duration::from_secs(60)).await;
            let local = TenantGate::new(limits);
            let t = tenant("latency");
            let n = 2000;
            let mut timings = Vec::new();
            for gate in [&local, &a] {
                let _ = gate.admit(&t).await.unwrap();
                let started = std::time::Instant::now();
                for _ in 0..n {
                    let _ticket = gate.admit(&t).await.unwrap();
                }
                timings.push(started.elapsed() / n);
            }
            println!(
                "admit (rate + in-flight, release in the background): local {:?}, Redis {:?}",
                timings[0], timings[1]
            );
            assert_eq!(counters.fallbacks.get(), 0);
        }
    }
}
