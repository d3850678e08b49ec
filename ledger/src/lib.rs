//! `yolo-edge-ledger`: the billing domain. Tenants, API keys and prepaid balances
//! ([`keys`]) with the [`holds`] of calls in flight, the hash-chained invocation ledger and its verification ([`chain`]), answers
//! kept for idempotent replays, and usage ([`usage`]), behind one [`Store`] trait with two
//! implementations side by side: [`sqlite`] (the embedded default, one host) and [`postgres`]
//! (one database shared by several hosts). Both keep versioned schemas ([`migrations`]);
//! [`digest`] makes the length-framed SHA-256 fingerprints that everything keyed by content uses.
//!
//! Nothing here knows HTTP, the runtime or rendering: the host calls [`open`] once and then
//! the [`Store`] methods; tables, CSV and CloudEvents are the host's.
#![deny(missing_docs)]

pub mod chain;
pub mod digest;
pub mod holds;
pub mod keys;
pub mod migrations;
pub mod postgres;
pub mod sqlite;
pub mod store;
pub mod usage;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

pub use self::chain::{Entry, GENESIS, LedgerRow, Outcome, StoredAnswer, VerifyReport};
pub use self::holds::{HoldOutcome, HoldRequest};
pub use self::keys::{AuthError, Caller, KeyInfo, NewKey, validate_tenant};
use self::postgres::PgStore;
use self::sqlite::Db;
pub use self::store::{KeyHold, Store};
pub use self::usage::{Day, Period, Totals, UsageReport, rfc3339};

/// `[database]` in `yolo-edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database` for a shared PostgreSQL ledger; unset:
    /// the SQLite file in the data directory.
    pub url: Option<String>,
    /// Connections to PostgreSQL each host keeps at most (requests in flight under an
    /// `Idempotency-Key` hold one each while they run).
    pub max_connections: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 32 }
    }
}

/// Open the store that `url` names (`postgres://` or `postgresql://`), else the SQLite file in
/// `data_dir`. PostgreSQL's schema migrations are applied before this returns; an unreachable
/// server is retried for up to `patience`.
pub async fn open(
    url: Option<&str>,
    max_connections: usize,
    data_dir: &Path,
    patience: Duration,
) -> anyhow::Result<Arc<dyn Store>> {
    match url {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Arc::new(PgStore::connect(url, max_connections, patience).await?))
        }
        Some(url) => anyhow::bail!(
            "unsupported database URL {:?}: use postgres://user:password@host:port/database, or leave it unset for the SQLite file in the data directory",
            redact_url(url)
        ),
        None => {
            let dir = data_dir.to_owned();
            Ok(Arc::new(tokio::task::spawn_blocking(move || Db::open(&dir)).await??))
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// `url` (a database or Redis URL) with its password replaced by `***`, for messages and logs.
/// Text that does not parse as a URL is shown as it is unless it could hold a password (an
/// `@`), which is then hidden whole.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only URLs that cannot have credentials refuse a password, and this one has one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) if url.contains('@') => "***".to_owned(),
        Err(_) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/ledger"), "postgres://app:***@db:5432/ledger");
        assert_eq!(redact_url("postgres://app@db/ledger?sslmode=disable"), "postgres://app@db/ledger?sslmode=disable");
        assert_eq!(redact_url("postgresql://db"), "postgresql://db");
        assert_eq!(redact_url("p:w@x"), "p:w@x");
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://:secret@r:6379"), "redis://:***@r:6379");
        assert_eq!(redact_url("rediss://app:secret@r:6379/1"), "rediss://app:***@r:6379/1");
    }

    #[test]
    fn both_stores_number_their_steps_in_order() {
        for steps in [sqlite::MIGRATIONS, postgres::MIGRATIONS] {
            for (i, (version, _, _)) in steps.iter().enumerate() {
                assert_eq!(*version, i32::try_from(i).unwrap() + 1);
            }
        }
    }
}
