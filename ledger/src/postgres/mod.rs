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

mod holds;
mod locks;
mod migrations;
mod rows;

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls};

use self::locks::{key_lock_id, poll_key_lock};
pub use self::migrations::MIGRATIONS;
use self::migrations::migrate;
use self::rows::{read_row, stored_answer_of};
use crate::chain::{Balance, COLUMNS, ChainWalk, Entry, LedgerRow, StoredAnswer, VerifyReport, hash_of};
use crate::holds::{HoldOutcome, HoldRequest, held_problem};
use crate::keys::{
    AuthError, Caller, KeyInfo, NewKey, StoredKey, bearer_key, check_key, generate_key, validate_tenant,
};
use crate::store::{KeyHold, Store};
use crate::usage::{Day, Period, Totals, UsageReport};
use crate::{now_us, redact_url};

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

    async fn record(
        &self,
        entry: Entry,
        answer: Option<StoredAnswer>,
        hold: Option<String>,
    ) -> anyhow::Result<(LedgerRow, i64)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert_sql = format!(
            "INSERT INTO invocations ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        );
        let (head, insert, advance, charge, keep) = tokio::try_join!(
            tx.prepare_cached("SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE"),
            tx.prepare_cached(&insert_sql),
            tx.prepare_cached("UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1"),
            // The charge, and the capture of the call's hold (released in the same statement).
            tx.prepare_cached(
                "WITH gone AS (DELETE FROM holds WHERE id = $3 AND tenant = $1 RETURNING tokens)
                 UPDATE tenants SET balance = balance - $2, held = held - COALESCE((SELECT SUM(tokens) FROM gone), 0)
                 WHERE name = $1 RETURNING balance - held"
            ),
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
        let charged: [&(dyn ToSql + Sync); 3] = [&e.tenant, &e.tokens, &hold];
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

    async fn hold_tokens(&self, hold: &HoldRequest) -> anyhow::Result<HoldOutcome> {
        Self::hold_tokens(self, hold).await
    }

    async fn release_hold(&self, id: &str) -> anyhow::Result<()> {
        Self::release_hold(self, id).await
    }

    async fn release_expired_holds(&self, now_us: i64) -> anyhow::Result<u64> {
        Self::release_expired_holds(self, now_us).await
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
        let held = holds::held_checks(&tx).await?;
        tx.commit().await?;
        let mut report = walk.finish(Some(head), &balances);
        if report.problem.is_none() {
            report.problem = held_problem(&held, now_us());
        }
        Ok(report)
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
