//! `Idempotency-Key`: a request repeated by the same tenant within 24 hours gets the stored
//! answer and is never billed twice.
//!
//! Stored answers live in the [`Store`], written in the same transaction as the ledger row
//! of the invocation that produced them. While that first invocation is still running, a
//! repeat **waits** for it (rather than answering 409) and then replays its answer: on the
//! same host through an in-process channel, across hosts sharing PostgreSQL through
//! [`Store::hold_key`] (one waiter per host asks the database). A key
//! reused with a different request (method, path, query, content type or body) is refused
//! with 422. Requests refused before execution (401, 402, 413, ...) store nothing, so
//! retrying them runs them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use yolo_edge_ledger::digest::Fingerprint;

use yolo_edge_ledger::{KeyHold, Store, StoredAnswer, now_us};

/// How long an answer can be replayed.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The name of the request header.
pub const HEADER: &str = "idempotency-key";

type InFlight = Arc<Mutex<HashMap<(String, String), watch::Receiver<()>>>>;

/// Coordinates requests that share a key.
pub struct Idempotency {
    in_flight: InFlight,
    /// How long a repeat waits for another host's first request before giving up.
    remote_wait: Duration,
}

impl Idempotency {
    /// A repeat waits at most `remote_wait` while another host runs the first request (on
    /// this host it waits as long as the first runs).
    pub fn new(remote_wait: Duration) -> Self {
        Self { in_flight: InFlight::default(), remote_wait }
    }
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Claim {
    /// Nobody answered this key yet: run it (the guard releases the key when dropped).
    Execute(ClaimGuard),
    /// Replay this stored answer.
    Replay(StoredAnswer),
    /// The key was used for a different request.
    Mismatch(StoredAnswer),
}

/// Held while the first request with a key runs; waiters wake when it is dropped.
#[derive(Debug)]
pub struct ClaimGuard {
    in_flight: InFlight,
    key: (String, String),
    _done: watch::Sender<()>,
    _shared: KeyHold,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// Check a key: 1 to 255 visible ASCII characters.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("Idempotency-Key must be 1-255 visible ASCII characters, got {} bytes", key.len()));
    }
    Ok(())
}

/// The fingerprint of a request, to tell a retry from a different request under the same key.
pub fn request_fingerprint(method: &str, path_and_query: &str, content_type: &str, body: &[u8]) -> String {
    Fingerprint::new().field(method).field(path_and_query).field(content_type).rest(body).hex()
}

impl Idempotency {
    /// Decide what to do with a request of `tenant` carrying `key`. Waits while another
    /// request with the same key is running, here or on another host sharing `store`.
    pub async fn claim(&self, store: &dyn Store, tenant: &str, key: &str, fingerprint: &str) -> anyhow::Result<Claim> {
        let id = (tenant.to_owned(), key.to_owned());
        let mut guard = loop {
            let mut waiting = {
                let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(&id) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(());
                        map.insert(id.clone(), rx);
                        break ClaimGuard {
                            in_flight: self.in_flight.clone(),
                            key: id,
                            _done: tx,
                            _shared: KeyHold::local(),
                        };
                    }
                }
            };
            // Resolves when the running request's guard drops; then look again.
            let _ = waiting.changed().await;
        };
        // The only request with this key on this host; now the other hosts.
        guard._shared = store.hold_key(tenant, key, self.remote_wait).await?;
        let since = now_us() - REPLAY_WINDOW.as_micros() as i64;
        // Dropping the guard on a replay wakes this host's waiters, which then find the answer.
        Ok(match store.stored_answer(tenant, key, since).await? {
            Some(answer) if answer.request_sha256 == fingerprint => Claim::Replay(answer),
            Some(answer) => Claim::Mismatch(answer),
            None => Claim::Execute(guard),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_fingerprints() {
        validate_key("order-42").unwrap();
        assert!(validate_key("").is_err());
        assert!(validate_key("has space").is_err());
        assert!(validate_key(&"k".repeat(256)).is_err());
        let a = request_fingerprint("POST", "/detect", "image/png", b"abc");
        assert_eq!(a, request_fingerprint("POST", "/detect", "image/png", b"abc"));
        assert_ne!(a, request_fingerprint("POST", "/detect?conf=0.3", "image/png", b"abc"));
        assert_ne!(a, request_fingerprint("POST", "/detect", "image/png", b"abd"));
        assert_ne!(
            request_fingerprint("POST", "/detectimage/png", "", b""),
            request_fingerprint("POST", "/detect", "image/png", b""),
            "parts are length-prefixed"
        );
    }

    #[tokio::test]
    async fn a_second_claim_waits_for_the_first() {
        let dir = std::env::temp_dir().join(format!("yolo-edge-idempotency-{}-{}", std::process::id(), now_us()));
        let db = Arc::new(yolo_edge_ledger::sqlite::Db::open(&dir).unwrap());
        let idem = Arc::new(Idempotency::new(Duration::from_secs(5)));
        let Claim::Execute(guard) = idem.claim(&*db, "acme", "k", "f").await.unwrap() else { panic!("first runs") };
        let (db2, idem2) = (db.clone(), idem.clone());
        let second = tokio::spawn(async move { idem2.claim(&*db2, "acme", "k", "f").await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "waits while the first runs");
        drop(guard); // the first was refused before execution: nothing stored
        assert!(matches!(second.await.unwrap(), Claim::Execute(_)), "then runs itself");
        let _ = std::fs::remove_dir_all(dir);
    }
}
