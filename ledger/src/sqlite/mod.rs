//! The embedded store: one SQLite file (`<data dir>/yolo-edge.sqlite3`) holding tenants,
//! API keys, credits, the invocation ledger and stored idempotent answers, for one host.
//!
//! SQLite (through `rusqlite`, bundled) because the ledger must be durable and transactional
//! on one machine without a server: WAL journal, `synchronous = FULL` (a commit is on disk
//! before the response leaves), one writer at a time. The schema is versioned
//! ([`MIGRATIONS`]). Each concern's SQL is its own file: [`ledger`](self) rows and
//! verification, keys and credits, usage.

mod holds;
mod keys;
mod ledger;
mod migrations;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::Connection;

pub use self::migrations::MIGRATIONS;
use self::migrations::migrate;
use crate::chain::{Entry, LedgerRow, StoredAnswer, VerifyReport};
use crate::holds::{HoldOutcome, HoldRequest};
use crate::keys::{AuthError, Caller, KeyInfo, NewKey};
use crate::now_us;
use crate::store::{KeyHold, Store};
use crate::usage::{Period, UsageReport};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "yolo-edge.sqlite3";

/// The open database (clones share the one connection).
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Db {
    /// Open (creating if needed) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let applied =
            migrate(&mut conn, now_us()).with_context(|| format!("cannot migrate the schema of {}", path.display()))?;
        if !applied.is_empty() {
            tracing::debug!(database = %path.display(), ?applied, "schema migrations applied");
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection (one user at a time; SQLite serialises writers anyway).
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Run `f` on the SQLite connection off the async threads.
async fn blocking<T: Send + 'static>(
    db: &Db,
    f: impl FnOnce(&Db) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || f(&db)).await?
}

#[async_trait]
impl Store for Db {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path().display())
    }

    // Key and balance lookups are point reads by primary key on a local file (microseconds):
    // they run in place, as writes and scans go to the blocking pool.
    async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        Self::authenticate(self, authorization)
    }

    async fn balance(&self, tenant: &str) -> anyhow::Result<Option<i64>> {
        Self::balance(self, tenant)
    }

    async fn record(
        &self,
        entry: Entry,
        answer: Option<StoredAnswer>,
        hold: Option<String>,
    ) -> anyhow::Result<(LedgerRow, i64)> {
        blocking(self, move |db| Self::record(db, &entry, answer.as_ref(), hold.as_deref())).await
    }

    async fn hold_tokens(&self, hold: &HoldRequest) -> anyhow::Result<HoldOutcome> {
        let hold = hold.clone();
        blocking(self, move |db| Self::hold_tokens(db, &hold)).await
    }

    async fn release_hold(&self, id: &str) -> anyhow::Result<()> {
        let id = id.to_owned();
        blocking(self, move |db| Self::release_hold(db, &id)).await
    }

    async fn release_expired_holds(&self, now_us: i64) -> anyhow::Result<u64> {
        blocking(self, move |db| Self::release_expired_holds(db, now_us)).await
    }

    async fn stored_answer(&self, tenant: &str, key: &str, since_us: i64) -> anyhow::Result<Option<StoredAnswer>> {
        Self::stored_answer(self, tenant, key, since_us)
    }

    async fn hold_key(&self, _tenant: &str, _key: &str, _wait: Duration) -> anyhow::Result<KeyHold> {
        Ok(KeyHold::local())
    }

    async fn invocation(&self, tenant: &str, id: &str) -> anyhow::Result<Option<LedgerRow>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        blocking(self, move |db| Self::invocation(db, &tenant, &id)).await
    }

    async fn invocations(&self, tenant: &str, from_us: i64, to_us: i64) -> anyhow::Result<Vec<LedgerRow>> {
        let tenant = tenant.to_owned();
        blocking(self, move |db| Self::invocations(db, &tenant, from_us, to_us)).await
    }

    async fn usage(&self, tenant: &str, period: Period) -> anyhow::Result<UsageReport> {
        let tenant = tenant.to_owned();
        blocking(self, move |db| Self::usage(db, &tenant, period)).await
    }

    async fn verify(&self) -> anyhow::Result<VerifyReport> {
        blocking(self, Self::verify).await
    }

    async fn create_key(&self, tenant: &str, initial_credit: i64) -> anyhow::Result<NewKey> {
        let tenant = tenant.to_owned();
        blocking(self, move |db| Self::create_key(db, &tenant, initial_credit)).await
    }

    async fn list_keys(&self, tenant: Option<&str>) -> anyhow::Result<Vec<KeyInfo>> {
        let tenant = tenant.map(str::to_owned);
        blocking(self, move |db| Self::list_keys(db, tenant.as_deref())).await
    }

    async fn revoke_key(&self, id: &str) -> anyhow::Result<()> {
        let id = id.to_owned();
        blocking(self, move |db| Self::revoke_key(db, &id)).await
    }

    async fn add_credit(&self, tenant: &str, tokens: i64, note: &str) -> anyhow::Result<i64> {
        let (tenant, note) = (tenant.to_owned(), note.to_owned());
        blocking(self, move |db| Self::add_credit(db, &tenant, tokens, &note)).await
    }
}

/// A fresh database in a new temporary directory, for tests.
#[cfg(test)]
pub(crate) fn temp_db(name: &str) -> (Db, PathBuf) {
    let dir = std::env::temp_dir().join(format!("yolo-edge-{name}-{}-{}", std::process::id(), now_us()));
    (Db::open(&dir).expect("open a temporary database"), dir)
}
