//! One way to reach Redis for everything hosts share through it: the result cache
//! ([`crate::cache`]) and the tenant limits ([`crate::limits`]).
//!
//! `[redis] url` / `--redis-url` (`$YOLO_EDGE_REDIS_URL`) names the Redis of a fleet; the
//! cache uses it too unless `[cache] redis_url` / `--cache-redis-url` names another one.
//! Hosts that use the same URL share one [`RedisLink`]: one `redis` connection manager
//! (which reconnects by itself), one set of timeouts, one view of whether Redis is up.
//!
//! Redis is never allowed to make a request fail or wait long:
//! - every call has its own deadline ([`RedisLink::call`]);
//! - after a failed call the link is *down* for [`RedisLink::RETRY_AFTER`]: calls in that
//!   window are not attempted (each use falls back: the cache misses, the limits decide
//!   locally), then the next call tries Redis again;
//! - a Redis that does not answer at start does not stop the host (it starts degraded and
//!   connects when Redis comes); only a URL that does not parse does.
//!
//! Failures are logged at most once per [`RedisLink::WARN_EVERY`], with how many there were.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

use yolo_edge_ledger::redact_url;

/// `[redis]` in `yolo-edge.toml`: the Redis shared by a fleet of hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`): share the tenant limits, and the result cache
    /// unless `[cache] redis_url` names another Redis, with every host on it.
    pub url: Option<String>,
}

/// Why a call did not reach Redis.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// The link failed recently: not attempted.
    #[error("Redis failed less than a second ago; not tried")]
    Down,
    /// Redis did not answer within the call's deadline.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis (or the connection to it) answered an error.
    #[error("{0}")]
    Failed(#[from] redis::RedisError),
}

/// A connection to one Redis, shared by whatever uses it, with a short memory of failures.
pub struct RedisLink {
    connection: ConnectionManager,
    /// The URL without its password, for logs.
    shown: String,
    url: String,
    created: Instant,
    /// Milliseconds after `created` before which calls are not attempted.
    down_until_ms: AtomicU64,
    /// When a failure was last logged, and failures since.
    warned: Mutex<(Option<Instant>, u64)>,
}

impl RedisLink {
    /// How long calls are not attempted after one failed.
    pub const RETRY_AFTER: Duration = Duration::from_secs(1);
    /// At most one warning per this long.
    pub const WARN_EVERY: Duration = Duration::from_secs(10);
    /// How long the host waits at start for Redis to answer before starting without it.
    pub const START_WAIT: Duration = Duration::from_secs(5);

    /// Connect to `url` (`setting` names where it came from, for errors). A URL that does not
    /// parse is an error; a Redis that does not answer within [`Self::START_WAIT`] is logged,
    /// and the link connects when Redis does.
    pub async fn open(url: &str, setting: &str) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("{setting} {url:?} is not a Redis URL: {e}"))?;
        // The connection's own deadlines bound a reconnection; each call has a shorter one.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cannot set up a connection to Redis at {}: {e}", redact_url(url)))?;
        let link = Self {
            connection,
            shown: redact_url(url),
            url: url.to_owned(),
            created: Instant::now(),
            down_until_ms: AtomicU64::new(0),
            warned: Mutex::new((None, 0)),
        };
        let ping =
            link.call(Self::START_WAIT, |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await });
        match ping.await {
            Ok(_) => tracing::info!(redis = %link.shown, "Redis answers"),
            Err(e) => tracing::warn!(
                redis = %link.shown,
                error = %e,
                "Redis does not answer: starting without it (limits decided by this host alone, cache lookups miss) until it does"
            ),
        }
        Ok(link)
    }

    /// The URL as configured (to tell whether two settings name the same Redis).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL without a password, for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A handle on the connection for work that must not be refused by the failure window
    /// (releasing what was taken). Its calls have the connection's own 2 s deadline.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Whether a call would be attempted now (Redis has not failed in the last
    /// [`Self::RETRY_AFTER`]).
    pub fn is_up(&self) -> bool {
        self.elapsed_ms() >= self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Run `call` on the connection within `deadline`, unless Redis failed less than
    /// [`Self::RETRY_AFTER`] ago. A failure or timeout opens that window and is logged
    /// (rate-limited); the caller decides what to do without Redis.
    pub async fn call<T, F, Fut>(&self, deadline: Duration, call: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Unavailable::Down);
        }
        let failure = match tokio::time::timeout(deadline, call(self.connection.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => Unavailable::Failed(e),
            Err(_) => Unavailable::Timeout(deadline),
        };
        self.failed(&failure);
        Err(failure)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn failed(&self, failure: &Unavailable) {
        let until = self.elapsed_ms().saturating_add(Self::RETRY_AFTER.as_millis() as u64);
        self.down_until_ms.fetch_max(until, Ordering::Relaxed);
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        warned.1 += 1;
        if warned.0.is_none_or(|at| at.elapsed() >= Self::WARN_EVERY) {
            tracing::warn!(
                redis = %self.shown,
                error = %failure,
                failures = warned.1,
                "Redis unavailable: the result cache misses and tenant limits are decided by each host alone until it answers"
            );
            *warned = (Some(Instant::now()), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redis_that_is_not_there_is_tried_again_after_a_pause() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let link = RedisLink::open(&format!("redis://127.0.0.1:{port}/0"), "test").await.unwrap();
        assert!(!link.is_up(), "the start-up PING failed");
        let ping = |mut c: ConnectionManager| async move { redis::cmd("PING").query_async::<String>(&mut c).await };
        assert!(matches!(link.call(Duration::from_millis(200), ping).await, Err(Unavailable::Down)));
        assert!(RedisLink::open("http://nope", "[redis] url").await.is_err(), "not a Redis URL");
    }
}
