//! PostgreSQL's schema steps (see [`crate::migrations`]), applied at start, each in its own
//! transaction, under an advisory lock so hosts starting together apply them once.

use anyhow::Context as _;
use deadpool_postgres::Object;

use crate::migrations::{Migration, pending};

/// The advisory lock that serialises migrations ("yolo-edge" in ASCII).
const MIGRATION_LOCK: i64 = 0x796f_6c6f_2d65_6467;

/// The schema, one `(version, name, SQL)` per step, applied in order and never edited once
/// released: a change is a new step.
pub const MIGRATIONS: &[Migration] = &[
    (
        1,
        "tenants, keys, credits, ledger, idempotent answers",
        "CREATE TABLE tenants (
        name        TEXT PRIMARY KEY,
        balance     BIGINT NOT NULL,
        created_us  BIGINT NOT NULL
    );
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL REFERENCES tenants (name),
        key_sha256  BYTEA NOT NULL,
        created_us  BIGINT NOT NULL,
        revoked_us  BIGINT
    );
    CREATE TABLE credits (
        seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant  TEXT NOT NULL REFERENCES tenants (name),
        tokens  BIGINT NOT NULL,
        ts_us   BIGINT NOT NULL,
        note    TEXT NOT NULL
    );
    CREATE TABLE invocations (
        seq              BIGINT PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        tenant           TEXT NOT NULL,
        key_id           TEXT NOT NULL,
        ts_us            BIGINT NOT NULL,
        route            TEXT NOT NULL,
        status           INTEGER NOT NULL,
        outcome          TEXT NOT NULL,
        fuel             BIGINT NOT NULL,
        wall_us          BIGINT NOT NULL,
        nn_us            BIGINT NOT NULL,
        peak_memory      BIGINT NOT NULL,
        pixels           BIGINT NOT NULL,
        tokens           BIGINT NOT NULL,
        cache_hit        BOOLEAN NOT NULL,
        replay           BOOLEAN NOT NULL,
        idempotency_key  TEXT,
        replay_of        TEXT,
        prev_hash        TEXT NOT NULL,
        hash             TEXT NOT NULL
    );
    CREATE INDEX invocations_by_tenant ON invocations (tenant, ts_us);
    CREATE TABLE chain_head (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        seq   BIGINT NOT NULL,
        hash  TEXT NOT NULL
    );
    INSERT INTO chain_head (id, seq, hash)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
    CREATE TABLE idempotency (
        tenant          TEXT NOT NULL,
        key             TEXT NOT NULL,
        request_sha256  TEXT NOT NULL,
        invocation_id   TEXT NOT NULL,
        created_us      BIGINT NOT NULL,
        status          INTEGER NOT NULL,
        headers         TEXT NOT NULL,
        body            BYTEA NOT NULL,
        PRIMARY KEY (tenant, key)
    );",
    ),
    (
        2,
        "holds: the balance reserved by calls in flight",
        "ALTER TABLE tenants ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE holds (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL REFERENCES tenants (name),
        tokens      BIGINT NOT NULL,
        created_us  BIGINT NOT NULL,
        expires_us  BIGINT NOT NULL
    );
    CREATE INDEX holds_by_expiry ON holds (expires_us);",
    ),
];

/// Apply the migrations `client`'s database lacks; the versions applied now.
pub(crate) async fn migrate(client: &mut Object) -> anyhow::Result<Vec<i32>> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version     INTEGER PRIMARY KEY,
                name        TEXT NOT NULL,
                applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let done: Vec<i32> =
        client.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut applied = Vec::new();
    for (version, name, sql) in pending(MIGRATIONS, &done)? {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.with_context(|| format!("migration {version} ({name}) failed"))?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tx.commit().await?;
        applied.push(*version);
    }
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    Ok(applied)
}
