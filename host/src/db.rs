//! The state database: one SQLite file (`<data dir>/yolo-edge.sqlite3`) holding tenants,
//! API keys, credits, the invocation ledger and stored idempotent answers.
//!
//! SQLite (through `rusqlite`, bundled) because the ledger must be durable and transactional
//! on one machine without a server: WAL journal, `synchronous = FULL` (a commit is on disk
//! before the response leaves), one writer at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rusqlite::Connection;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "yolo-edge.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    name        TEXT PRIMARY KEY,
    balance     INTEGER NOT NULL,
    created_us  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id             TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL REFERENCES tenants(name),
    key_sha256     BLOB NOT NULL,
    created_us     INTEGER NOT NULL,
    revoked_us     INTEGER
);
CREATE TABLE IF NOT EXISTS credits (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant  TEXT NOT NULL REFERENCES tenants(name),
    tokens  INTEGER NOT NULL,
    ts_us   INTEGER NOT NULL,
    note    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS invocations (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    tenant           TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    ts_us            INTEGER NOT NULL,
    route            TEXT NOT NULL,
    status           INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    fuel             INTEGER NOT NULL,
    wall_us          INTEGER NOT NULL,
    nn_us            INTEGER NOT NULL,
    peak_memory      INTEGER NOT NULL,
    pixels           INTEGER NOT NULL,
    tokens           INTEGER NOT NULL,
    cache_hit        INTEGER NOT NULL,
    replay           INTEGER NOT NULL,
    idempotency_key  TEXT,
    replay_of        TEXT,
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_by_tenant ON invocations (tenant, ts_us);
CREATE TABLE IF NOT EXISTS chain_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant          TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_sha256  TEXT NOT NULL,
    invocation_id   TEXT NOT NULL,
    created_us      INTEGER NOT NULL,
    status          INTEGER NOT NULL,
    headers         TEXT NOT NULL,
    body            BLOB NOT NULL,
    PRIMARY KEY (tenant, key)
);
";

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
        let conn = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA).with_context(|| format!("cannot create the schema in {}", path.display()))?;
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

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The default data directory: `$XDG_DATA_HOME/yolo-edge`, else `~/.local/share/yolo-edge`,
/// else `./yolo-edge-data`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map_or_else(|| PathBuf::from("yolo-edge-data"), |d| d.join("yolo-edge"))
}

/// A fresh database in a new temporary directory, for tests.
#[cfg(test)]
pub(crate) fn temp_db(name: &str) -> (Db, PathBuf) {
    let dir = std::env::temp_dir().join(format!("yolo-edge-{name}-{}-{}", std::process::id(), now_us()));
    (Db::open(&dir).expect("open a temporary database"), dir)
}
