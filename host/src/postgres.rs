//! The PostgreSQL [`Store`]: one database shared by several hosts (`--database-url`).
//!
//! `tokio-postgres` (the native async client; no libpq) through a `deadpool-postgres` pool.
//! The schema is versioned: [`MIGRATIONS`] are applied at start, in order, each in its own
//! transaction, under an advisory lock so hosts starting together apply them once; a database
//! migrated by a newer yolo-edge is refused.
//!
//! Several writers, one chain: an append locks the single `chain_head` row (`FOR UPDATE`)
//! for the length of its transaction, so rows are chained strictly one after another
//! whichever host writes them, and `ledger verify` checks the same chain as on SQLite.
//! The row, the head, the charge and a kept answer are sent together (pipelined) and
//! committed before the host answers.
//!
//! Idempotency across hosts: the first request with a key takes a session advisory lock
//! derived from `(tenant, key)` on a pooled connection and keeps it until its answer is
//! committed; a repeat on another host polls for that lock, then finds the stored answer and
//! replays it. A host that dies loses its connections, and PostgreSQL releases their locks.
//!
//! TLS to PostgreSQL is not built in: `sslmode=require` is refused with a clear error (use a
//! private network, or a TLS-terminating proxy beside the host).

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use sha2::{Digest as _, Sha256};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};

use crate::config::redact_url;
use crate::db::now_us;
use crate::ledger::{Balance, COLUMNS, ChainWalk, Entry, LedgerRow, StoredAnswer, VerifyReport, hash_of};
use crate::store::{KeyHold, Store};
use crate::tenants::{
    AuthError, Caller, KeyInfo, NewKey, StoredKey, bearer_key, check_key, generate_key, validate_tenant,
};
use crate::usage::{Day, Period, Totals, UsageReport};

/// The schema, one `(version, name, SQL)` per step, applied in order and never edited once
/// released: a change is a new step.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
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
)];

/// The advisory lock that serialises migrations ("yolo-edge" in ASCII).
const MIGRATION_LOCK: i64 = 0x796f_6c6f_2d65_6467;

/// A PostgreSQL database shared by the hosts.
pub struct PgStore {
    pool: Pool,
    described: String,
}

impl PgStore {
    /// Connect and apply the migrations this database lacks. While the server cannot be
    /// reached, retry for up to `patience` (a fleet and its database often start together),
    /// then fail with the reason.
    pub async fn connect(url: &str, max_connections: usize, patience: Duration) -> anyhow::Result<Self> {
        let shown = redact_url(url);
        let config = tokio_postgres::Config::from_str(url).with_context(|| format!("bad database URL {shown}"))?;
        if config.get_ssl_mode() == SslMode::Require {
            anyhow::bail!(
                "{shown} asks for sslmode=require, but this build connects to PostgreSQL without TLS: use a private network or a TLS proxy, and sslmode=disable or prefer"
            );
        }
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(2))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .context("cannot build the PostgreSQL connection pool")?;
        let store = Self { pool, described: format!("postgres {shown}") };
        let started = Instant::now();
        let mut client = loop {
            match store.client().await {
                Ok(client) => break client,
                Err(e) if started.elapsed() < patience => {
                    tracing::warn!(database = %shown, error = %format!("{e:#}"), "PostgreSQL is not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.context(format!("cannot connect to PostgreSQL at {shown}"))),
            }
        };
        let applied = migrate(&mut client).await.with_context(|| format!("cannot migrate the schema of {shown}"));
        // The migration lock was a session lock: this connection is closed rather than reused.
        drop(Object::take(client));
        let applied = applied?;
        if !applied.is_empty() {
            tracing::info!(database = %shown, ?applied, "schema migrations applied");
        }
        Ok(store)
    }

    async fn client(&self) -> anyhow::Result<Object> {
        self.pool.get().await.map_err(|e| anyhow::anyhow!("no PostgreSQL connection: {e}"))
    }
}

/// Apply the migrations `client`'s database lacks; the versions applied now.
async fn migrate(client: &mut Object) -> anyhow::Result<Vec<i32>> {
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
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(newer) = done.iter().copied().filter(|v| *v > known).max() {
        anyhow::bail!(
            "the database is at schema version {newer}, newer than this yolo-edge knows ({known}): upgrade yolo-edge"
        );
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.with_context(|| format!("migration {version} ({name}) failed"))?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tx.commit().await?;
        applied.push(*version);
    }
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    Ok(applied)
}

fn read_row(r: &Row) -> anyhow::Result<LedgerRow> {
    let status: i32 = r.try_get(6)?;
    Ok(LedgerRow {
        seq: r.try_get(0)?,
        entry: Entry {
            id: r.try_get(1)?,
            tenant: r.try_get(2)?,
            key_id: r.try_get(3)?,
            ts_us: r.try_get(4)?,
            route: r.try_get(5)?,
            status: u16::try_from(status).context("a status outside 0-65535")?,
            outcome: r.try_get(7)?,
            fuel: r.try_get(8)?,
            wall_us: r.try_get(9)?,
            nn_us: r.try_get(10)?,
            peak_memory: r.try_get(11)?,
            pixels: r.try_get(12)?,
            tokens: r.try_get(13)?,
            cache_hit: r.try_get(14)?,
            replay: r.try_get(15)?,
            idempotency_key: r.try_get(16)?,
            replay_of: r.try_get(17)?,
        },
        prev_hash: r.try_get(18)?,
        hash: r.try_get(19)?,
    })
}

/// The advisory lock id of an idempotency key: 64 bits of a SHA-256 (a collision only makes
/// two unrelated keys wait for each other).
fn key_lock_id(tenant: &str, key: &str) -> i64 {
    let mut h = Sha256::new();
    for part in ["yolo-edge idempotency", tenant, key] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let d = h.finalize();
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

async fn poll_key_lock(client: Object, id: i64, wait: Duration) -> anyhow::Result<KeyHold> {
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

fn stored_answer_of(tenant: &str, key: &str, r: &Row) -> anyhow::Result<StoredAnswer> {
    let status: i32 = r.try_get(3)?;
    let headers: String = r.try_get(4)?;
    Ok(StoredAnswer {
        tenant: tenant.to_owned(),
        key: key.to_owned(),
        request_sha256: r.try_get(0)?,
        invocation_id: r.try_get(1)?,
        created_us: r.try_get(2)?,
        status: u16::try_from(status).context("a status outside 0-65535")?,
        headers: serde_json::from_str(&headers)?,
        body: r.try_get(5)?,
    })
}

#[async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        self.described.clone()
    }

    async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let (id, key) = bearer_key(authorization)?;
        let looked_up = async {
            let client = self.client().await?;
            let stmt =
                client.prepare_cached("SELECT tenant, key_sha256, revoked_us FROM api_keys WHERE id = $1").await?;
            let row = client.query_opt(&stmt, &[&id]).await?;
            anyhow::Ok(row.map(|r| StoredKey { tenant: r.get(0), key_sha256: r.get(1), revoked_us: r.get(2) }))
        };
        let row = looked_up.await.map_err(|e| AuthError::Unavailable(format!("{e:#}")))?;
        check_key(id, key, row)
    }

    async fn balance(&self, tenant: &str) -> anyhow::Result<Option<i64>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT balance FROM tenants WHERE name = $1").await?;
        Ok(client.query_opt(&stmt, &[&tenant]).await?.map(|r| r.get(0)))
    }

    async fn record(&self, entry: Entry, answer: Option<StoredAnswer>) -> anyhow::Result<(LedgerRow, i64)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert_sql = format!(
            "INSERT INTO invocations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        );
        let (head, insert, advance, charge, keep) = tokio::try_join!(
            tx.prepare_cached("SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE"),
            tx.prepare_cached(&insert_sql),
            tx.prepare_cached("UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1"),
            tx.prepare_cached("UPDATE tenants SET balance = balance - $2 WHERE name = $1 RETURNING balance"),
            tx.prepare_cached(
                "INSERT INTO idempotency (tenant, key, request_sha256, invocation_id, created_us, status, headers, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant, key) DO UPDATE SET request_sha256 = excluded.request_sha256,
                   invocation_id = excluded.invocation_id, created_us = excluded.created_us,
                   status = excluded.status, headers = excluded.headers, body = excluded.body"
            ),
        )?;
        // Waits here while another host's append holds the head.
        let head = tx.query_one(&head, &[]).await?;
        let (last_seq, last_hash): (i64, String) = (head.get(0), head.get(1));
        let seq = last_seq + 1;
        let hash = hash_of(seq, &entry, &last_hash);
        let e = &entry;
        let status = i32::from(e.status);
        let kept = async {
            let Some(a) = &answer else { return Ok(0) };
            let headers = serde_json::to_string(&a.headers).unwrap_or_default();
            let status = i32::from(a.status);
            tx.execute(
                &keep,
                &[&a.tenant, &a.key, &a.request_sha256, &a.invocation_id, &a.created_us, &status, &headers, &a.body],
            )
            .await
        };
        let row: [&(dyn ToSql + Sync); 20] = [
            &seq,
            &e.id,
            &e.tenant,
            &e.key_id,
            &e.ts_us,
            &e.route,
            &status,
            &e.outcome,
            &e.fuel,
            &e.wall_us,
            &e.nn_us,
            &e.peak_memory,
            &e.pixels,
            &e.tokens,
            &e.cache_hit,
            &e.replay,
            &e.idempotency_key,
            &e.replay_of,
            &last_hash,
            &hash,
        ];
        let new_head: [&(dyn ToSql + Sync); 2] = [&seq, &hash];
        let charged: [&(dyn ToSql + Sync); 2] = [&e.tenant, &e.tokens];
        let (_, _, balance, _) = tokio::try_join!(
            tx.execute(&insert, &row),
            tx.execute(&advance, &new_head),
            tx.query_opt(&charge, &charged),
            kept,
        )?;
        let balance: i64 = balance.with_context(|| format!("no tenant {:?}", e.tenant))?.get(0);
        tx.commit().await?;
        Ok((LedgerRow { seq, entry, prev_hash: last_hash, hash }, balance))
    }

    async fn stored_answer(&self, tenant: &str, key: &str, since_us: i64) -> anyhow::Result<Option<StoredAnswer>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT request_sha256, invocation_id, created_us, status, headers, body FROM idempotency
                 WHERE tenant = $1 AND key = $2 AND created_us >= $3",
            )
            .await?;
        client
            .query_opt(&stmt, &[&tenant, &key, &since_us])
            .await?
            .map(|r| stored_answer_of(tenant, key, &r))
            .transpose()
    }

    async fn hold_key(&self, tenant: &str, key: &str, wait: Duration) -> anyhow::Result<KeyHold> {
        let client = self.client().await?;
        let id = key_lock_id(tenant, key);
        // In a task of its own: were this future dropped while PostgreSQL grants the lock, the
        // lock would go back to the pool with the connection; a task always finishes, and the
        // hold it makes is dropped (released) when nobody takes it.
        tokio::spawn(poll_key_lock(client, id, wait)).await?
    }

    async fn invocation(&self, tenant: &str, id: &str) -> anyhow::Result<Option<LedgerRow>> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached(&format!("SELECT {COLUMNS} FROM invocations WHERE id = $1 AND tenant = $2")).await?;
        client.query_opt(&stmt, &[&id, &tenant]).await?.as_ref().map(read_row).transpose()
    }

    async fn invocations(&self, tenant: &str, from_us: i64, to_us: i64) -> anyhow::Result<Vec<LedgerRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM invocations WHERE tenant = $1 AND ts_us >= $2 AND ts_us < $3 ORDER BY seq"
            ))
            .await?;
        client.query(&stmt, &[&tenant, &from_us, &to_us]).await?.iter().map(read_row).collect()
    }

    async fn usage(&self, tenant: &str, period: Period) -> anyhow::Result<UsageReport> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT to_char(to_timestamp(ts_us / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                        COUNT(*), SUM(tokens)::BIGINT, SUM(fuel)::BIGINT, SUM(wall_us)::BIGINT, SUM(nn_us)::BIGINT,
                        SUM(pixels)::BIGINT, COUNT(*) FILTER (WHERE status >= 500),
                        COUNT(*) FILTER (WHERE replay), COUNT(*) FILTER (WHERE cache_hit)
                 FROM invocations WHERE tenant = $1 AND ts_us >= $2 AND ts_us < $3
                 GROUP BY day ORDER BY day",
            )
            .await?;
        let days = client
            .query(&stmt, &[&tenant, &period.from_us, &period.to_us])
            .await?
            .iter()
            .map(|r| Day {
                date: r.get(0),
                totals: Totals {
                    calls: r.get(1),
                    tokens: r.get(2),
                    fuel: r.get(3),
                    wall_us: r.get(4),
                    nn_us: r.get(5),
                    pixels: r.get(6),
                    failed: r.get(7),
                    replays: r.get(8),
                    cache_hits: r.get(9),
                },
            })
            .collect();
        Ok(UsageReport::new(tenant, period, days))
    }

    async fn verify(&self) -> anyhow::Result<VerifyReport> {
        let mut client = self.client().await?;
        // One snapshot for the chain, its head and the balances, while hosts go on appending.
        let tx =
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let head = tx.query_one("SELECT seq, hash FROM chain_head WHERE id = 1", &[]).await?;
        let head: (i64, String) = (head.get(0), head.get(1));
        let mut walk = ChainWalk::default();
        let portal = tx.bind(&format!("SELECT {COLUMNS} FROM invocations ORDER BY seq"), &[]).await?;
        'rows: loop {
            let batch = tx.query_portal(&portal, 1000).await?;
            for r in &batch {
                if !walk.step(&read_row(r)?) {
                    break 'rows;
                }
            }
            if batch.len() < 1000 {
                break;
            }
        }
        let balances = tx
            .query(
                "SELECT t.name, t.balance,
                        COALESCE((SELECT SUM(tokens) FROM credits c WHERE c.tenant = t.name), 0)::BIGINT,
                        COALESCE((SELECT SUM(tokens) FROM invocations i WHERE i.tenant = t.name), 0)::BIGINT
                 FROM tenants t ORDER BY t.name",
                &[],
            )
            .await?
            .iter()
            .map(|r| Balance { tenant: r.get(0), balance: r.get(1), credits: r.get(2), spent: r.get(3) })
            .collect::<Vec<_>>();
        tx.commit().await?;
        Ok(walk.finish(Some(head), &balances))
    }

    async fn create_key(&self, tenant: &str, initial_credit: i64) -> anyhow::Result<NewKey> {
        validate_tenant(tenant)?;
        let (new, key_sha256) = generate_key()?;
        let now = now_us();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO tenants (name, balance, created_us) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING",
            &[&tenant, &now],
        )
        .await?;
        tx.execute(
            "INSERT INTO api_keys (id, tenant, key_sha256, created_us) VALUES ($1, $2, $3, $4)",
            &[&new.id, &tenant, &key_sha256, &now],
        )
        .await?;
        if initial_credit != 0 {
            credit_in(&tx, tenant, initial_credit, "initial credit", now).await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn list_keys(&self, tenant: Option<&str>) -> anyhow::Result<Vec<KeyInfo>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, tenant, created_us, revoked_us FROM api_keys
                 WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY tenant, created_us",
                &[&tenant],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyInfo { id: r.get(0), tenant: r.get(1), created_us: r.get(2), revoked_us: r.get(3) })
            .collect())
    }

    async fn revoke_key(&self, id: &str) -> anyhow::Result<()> {
        let client = self.client().await?;
        let n = client
            .execute("UPDATE api_keys SET revoked_us = COALESCE(revoked_us, $2) WHERE id = $1", &[&id, &now_us()])
            .await?;
        if n == 0 {
            anyhow::bail!("no API key with id {id:?} (see `yolo-edge keys list`)");
        }
        Ok(())
    }

    async fn add_credit(&self, tenant: &str, tokens: i64, note: &str) -> anyhow::Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let balance = credit_in(&tx, tenant, tokens, note, now_us()).await?;
        tx.commit().await?;
        Ok(balance)
    }
}

async fn credit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    tokens: i64,
    note: &str,
    now: i64,
) -> anyhow::Result<i64> {
    let balance = tx
        .query_opt("UPDATE tenants SET balance = balance + $2 WHERE name = $1 RETURNING balance", &[&tenant, &tokens])
        .await?
        .map(|r| r.get::<_, i64>(0))
        .with_context(|| format!("no tenant {tenant:?} (create one with `yolo-edge keys create --tenant {tenant}`)"))?;
    tx.execute(
        "INSERT INTO credits (tenant, tokens, ts_us, note) VALUES ($1, $2, $3, $4)",
        &[&tenant, &tokens, &now, &note],
    )
    .await?;
    Ok(balance)
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

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i32::try_from(i).unwrap() + 1);
        }
    }
}
