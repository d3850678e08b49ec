//! Idempotency across hosts: the first request with a key takes a session advisory lock
//! derived from `(tenant, key)` on a pooled connection and keeps it until its answer is
//! committed; a repeat on another host polls for that lock.

use std::time::{Duration, Instant};

use deadpool_postgres::Object;

use crate::digest::Fingerprint;
use crate::store::KeyHold;

/// The advisory lock id of an idempotency key: 64 bits of a SHA-256 (a collision only makes
/// two unrelated keys wait for each other).
pub(crate) fn key_lock_id(tenant: &str, key: &str) -> i64 {
    let d = Fingerprint::new().field("yolo-edge idempotency").field(tenant).field(key).finish();
    i64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}

/// A session advisory lock held on a pooled connection; released (or, failing that, the
/// connection closed, which releases it too) when dropped.
struct AdvisoryLock {
    client: Option<Object>,
    id: i64,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let id = self.id;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let unlocked = client.query_one("SELECT pg_advisory_unlock($1)", &[&id]).await;
                    if !matches!(unlocked.as_ref().map(|r| r.get::<_, bool>(0)), Ok(true)) {
                        tracing::warn!(?unlocked, "idempotency lock not released: closing its connection");
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

/// Wait up to `wait` for the advisory lock `id` on `client`, polling with backoff.
pub(crate) async fn poll_key_lock(client: Object, id: i64, wait: Duration) -> anyhow::Result<KeyHold> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if client.query_one("SELECT pg_try_advisory_lock($1)", &[&id]).await?.get::<_, bool>(0) {
            return Ok(KeyHold::new(AdvisoryLock { client: Some(client), id }));
        }
        if started.elapsed() >= wait {
            anyhow::bail!("another host is still running the request with this Idempotency-Key after {wait:?}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_locks_differ_by_tenant_and_key() {
        let a = key_lock_id("acme", "k1");
        assert_eq!(a, key_lock_id("acme", "k1"));
        assert_ne!(a, key_lock_id("acme", "k2"));
        assert_ne!(a, key_lock_id("acmek", "1"));
    }
}
