//! SQLite's schema steps (see [`crate::migrations`]). Step 1 is written with `IF NOT EXISTS`
//! so that a data directory made before the schema was versioned takes it as it is.

use rusqlite::{Connection, params};

use crate::migrations::{Migration, pending};

/// SQLite's schema, in order.
pub const MIGRATIONS: &[Migration] = &[
    (
        1,
        "tenants, keys, credits, ledger, idempotent answers",
        "
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
",
    ),
    (
        2,
        "holds: the balance reserved by calls in flight",
        "
ALTER TABLE tenants ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
CREATE TABLE holds (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(name),
    tokens      INTEGER NOT NULL,
    created_us  INTEGER NOT NULL,
    expires_us  INTEGER NOT NULL
);
CREATE INDEX holds_by_expiry ON holds (expires_us);
",
    ),
];

/// Apply the steps `conn`'s database lacks, all in one transaction that also keeps a second
/// process from migrating at the same time; the versions applied now.
pub(crate) fn migrate(conn: &mut Connection, now_us: i64) -> anyhow::Result<Vec<i32>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY,
            name        TEXT NOT NULL,
            applied_us  INTEGER NOT NULL
        )",
    )?;
    let done = {
        let mut stmt = tx.prepare("SELECT version FROM schema_migrations")?;
        stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<i32>, _>>()?
    };
    let mut applied = Vec::new();
    for (version, name, sql) in pending(MIGRATIONS, &done)? {
        tx.execute_batch(sql).map_err(|e| anyhow::anyhow!("migration {version} ({name}) failed: {e}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_us) VALUES (?1, ?2, ?3)",
            params![version, name, now_us],
        )?;
        applied.push(*version);
    }
    tx.commit()?;
    Ok(applied)
}
