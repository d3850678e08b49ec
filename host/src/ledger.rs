//! The invocation ledger: one hash-chained row per invocation, written in the same SQLite
//! transaction that charges the tenant (and, for idempotent requests, stores the answer).
//!
//! Each row's `hash` is the SHA-256 of its canonical form (a JSON array of every column in
//! a fixed order, `prev_hash` included); `prev_hash` is the previous row's `hash` (64 zeros
//! for the first row); `seq` runs 1, 2, 3, ... without gaps; the `chain_head` table holds
//! the last `seq` and `hash`. [`Db::verify`] walks the chain and names the first row that
//! was altered or removed, and checks that every balance equals its credits minus its
//! invocations. (Rewriting the whole chain from some row on defeats any self-contained
//! chain: keep the printed head hash somewhere else to anchor it.)

use rusqlite::{OptionalExtension as _, Row, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::Db;

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an invocation ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The function answered (any status it chose).
    Answered,
    /// The function trapped or failed without an answer.
    Trap,
    /// The function passed its wall-clock deadline.
    Timeout,
    /// The function burnt its whole fuel budget.
    OutOfFuel,
    /// The function needed more memory than its limit.
    OutOfMemory,
    /// An idempotent replay: nothing executed.
    Replay,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::OutOfFuel => "out_of_fuel",
            Self::OutOfMemory => "out_of_memory",
            Self::Replay => "replay",
        }
    }
}

/// What is recorded for one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Invocation id (UUIDv7, time-ordered).
    pub id: String,
    /// Tenant charged.
    pub tenant: String,
    /// API key used.
    pub key_id: String,
    /// When it started, µs since the epoch.
    pub ts_us: i64,
    /// Method and path, e.g. `POST /detect`.
    pub route: String,
    /// HTTP status answered.
    pub status: u16,
    /// `answered`, `trap`, `timeout`, `out_of_fuel`, `out_of_memory` or `replay`.
    pub outcome: String,
    /// Guest fuel consumed.
    pub fuel: i64,
    /// Wall time, µs.
    pub wall_us: i64,
    /// Time inside inference, µs.
    pub nn_us: i64,
    /// Peak linear memory, bytes.
    pub peak_memory: i64,
    /// Decoded pixels.
    pub pixels: i64,
    /// Tokens charged.
    pub tokens: i64,
    /// Answered from the cache.
    pub cache_hit: bool,
    /// An idempotent replay of `replay_of`.
    pub replay: bool,
    /// The request's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// For a replay: the invocation whose answer was replayed.
    pub replay_of: Option<String>,
}

/// A stored row: the entry and its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    /// Position in the chain (1, 2, ...).
    pub seq: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: Entry,
    /// The previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// An answer kept for idempotent replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The tenant.
    pub tenant: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// SHA-256 of the request (method, path, query, content type, body).
    pub request_sha256: String,
    /// The invocation that produced it.
    pub invocation_id: String,
    /// When it was stored, µs.
    pub created_us: i64,
    /// Status.
    pub status: u16,
    /// Headers (name, value) as answered.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The result of [`Db::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked.
    pub rows: i64,
    /// The head hash (anchor it elsewhere).
    pub head: String,
    /// The first problem found, if any.
    pub problem: Option<String>,
}

fn canonical(seq: i64, e: &Entry, prev_hash: &str) -> String {
    serde_json::json!([
        1,
        seq,
        e.id,
        e.tenant,
        e.key_id,
        e.ts_us,
        e.route,
        e.status,
        e.outcome,
        e.fuel,
        e.wall_us,
        e.nn_us,
        e.peak_memory,
        e.pixels,
        e.tokens,
        e.cache_hit,
        e.replay,
        e.idempotency_key,
        e.replay_of,
        prev_hash
    ])
    .to_string()
}

pub(crate) fn hash_of(seq: i64, e: &Entry, prev_hash: &str) -> String {
    Sha256::digest(canonical(seq, e, prev_hash).as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) const COLUMNS: &str = "seq, id, tenant, key_id, ts_us, route, status, outcome, fuel, wall_us, nn_us, \
                       peak_memory, pixels, tokens, cache_hit, replay, idempotency_key, replay_of, prev_hash, hash";

fn read_row(r: &Row<'_>) -> rusqlite::Result<LedgerRow> {
    Ok(LedgerRow {
        seq: r.get(0)?,
        entry: Entry {
            id: r.get(1)?,
            tenant: r.get(2)?,
            key_id: r.get(3)?,
            ts_us: r.get(4)?,
            route: r.get(5)?,
            status: r.get(6)?,
            outcome: r.get(7)?,
            fuel: r.get(8)?,
            wall_us: r.get(9)?,
            nn_us: r.get(10)?,
            peak_memory: r.get(11)?,
            pixels: r.get(12)?,
            tokens: r.get(13)?,
            cache_hit: r.get(14)?,
            replay: r.get(15)?,
            idempotency_key: r.get(16)?,
            replay_of: r.get(17)?,
        },
        prev_hash: r.get(18)?,
        hash: r.get(19)?,
    })
}

impl Db {
    /// Append `entry` to the chain, charge its tokens to the tenant and, when given, store
    /// the answer for idempotent replays — all in one transaction, durable on return.
    /// Returns the row and the tenant's new balance.
    pub fn record(&self, entry: &Entry, answer: Option<&StoredAnswer>) -> anyhow::Result<(LedgerRow, i64)> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (last_seq, last_hash): (i64, String) = tx
            .query_row("SELECT seq, hash FROM chain_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((0, GENESIS.to_owned()));
        let seq = last_seq + 1;
        let hash = hash_of(seq, entry, &last_hash);
        let e = entry;
        tx.execute(
            &format!("INSERT INTO invocations ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
            params![
                seq, e.id, e.tenant, e.key_id, e.ts_us, e.route, e.status, e.outcome, e.fuel, e.wall_us, e.nn_us,
                e.peak_memory, e.pixels, e.tokens, e.cache_hit, e.replay, e.idempotency_key, e.replay_of,
                last_hash, hash
            ],
        )?;
        tx.execute(
            "INSERT INTO chain_head (id, seq, hash) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![seq, hash],
        )?;
        let balance: i64 = tx.query_row(
            "UPDATE tenants SET balance = balance - ?2 WHERE name = ?1 RETURNING balance",
            params![e.tenant, e.tokens],
            |r| r.get(0),
        )?;
        if let Some(a) = answer {
            tx.execute(
                "INSERT INTO idempotency (tenant, key, request_sha256, invocation_id, created_us, status, headers, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tenant, key) DO UPDATE SET request_sha256 = excluded.request_sha256,
                   invocation_id = excluded.invocation_id, created_us = excluded.created_us,
                   status = excluded.status, headers = excluded.headers, body = excluded.body",
                params![
                    a.tenant,
                    a.key,
                    a.request_sha256,
                    a.invocation_id,
                    a.created_us,
                    a.status,
                    serde_json::to_string(&a.headers)?,
                    a.body
                ],
            )?;
        }
        tx.commit()?;
        let row = LedgerRow { seq, entry: entry.clone(), prev_hash: last_hash, hash };
        Ok((row, balance))
    }

    /// The stored answer for `(tenant, key)` created at or after `since_us`.
    pub fn stored_answer(&self, tenant: &str, key: &str, since_us: i64) -> anyhow::Result<Option<StoredAnswer>> {
        let conn = self.lock();
        let found = conn
            .query_row(
                "SELECT request_sha256, invocation_id, created_us, status, headers, body FROM idempotency
                 WHERE tenant = ?1 AND key = ?2 AND created_us >= ?3",
                params![tenant, key, since_us],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, u16>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((request_sha256, invocation_id, created_us, status, headers, body)) = found else {
            return Ok(None);
        };
        Ok(Some(StoredAnswer {
            tenant: tenant.to_owned(),
            key: key.to_owned(),
            request_sha256,
            invocation_id,
            created_us,
            status,
            headers: serde_json::from_str(&headers)?,
            body,
        }))
    }

    /// One of `tenant`'s invocations by id (`None` for another tenant's or an unknown id).
    pub fn invocation(&self, tenant: &str, id: &str) -> anyhow::Result<Option<LedgerRow>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM invocations WHERE id = ?1 AND tenant = ?2"),
                params![id, tenant],
                read_row,
            )
            .optional()?)
    }

    /// `tenant`'s invocations with `from_us <= ts_us < to_us`, in chain order.
    pub fn invocations(&self, tenant: &str, from_us: i64, to_us: i64) -> anyhow::Result<Vec<LedgerRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM invocations WHERE tenant = ?1 AND ts_us >= ?2 AND ts_us < ?3 ORDER BY seq"
        ))?;
        let rows = stmt.query_map(params![tenant, from_us, to_us], read_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of rows and the sum of tokens of a tenant (all time).
    pub fn totals(&self, tenant: &str) -> anyhow::Result<(i64, i64)> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM invocations WHERE tenant = ?1",
            params![tenant],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Walk the chain and the balances; report the first problem.
    pub fn verify(&self) -> anyhow::Result<VerifyReport> {
        let conn = self.lock();
        let head: Option<(i64, String)> = conn
            .query_row("SELECT seq, hash FROM chain_head WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let mut walk = ChainWalk::default();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM invocations ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if !walk.step(&read_row(r)?) {
                break;
            }
        }
        drop(rows);
        let mut stmt = conn.prepare(
            "SELECT t.name, t.balance,
                    COALESCE((SELECT SUM(tokens) FROM credits c WHERE c.tenant = t.name), 0),
                    COALESCE((SELECT SUM(tokens) FROM invocations i WHERE i.tenant = t.name), 0)
             FROM tenants t ORDER BY t.name",
        )?;
        let balances = stmt
            .query_map([], |r| {
                Ok(Balance { tenant: r.get(0)?, balance: r.get(1)?, credits: r.get(2)?, spent: r.get(3)? })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(walk.finish(head, &balances))
    }
}

/// A tenant's balance and what it should be, for [`ChainWalk::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The tenant.
    pub tenant: String,
    /// Its stored balance.
    pub balance: i64,
    /// The sum of its credits.
    pub credits: i64,
    /// The sum of its invocations' tokens.
    pub spent: i64,
}

/// Checks a ledger whatever stores it: feed the rows in `seq` order to [`ChainWalk::step`]
/// (it stops at the first broken link), then [`ChainWalk::finish`] compares the chain head
/// and the balances.
#[derive(Debug)]
pub struct ChainWalk {
    expected_seq: i64,
    prev: String,
    rows: i64,
    problem: Option<String>,
}

impl Default for ChainWalk {
    fn default() -> Self {
        Self { expected_seq: 1, prev: GENESIS.to_owned(), rows: 0, problem: None }
    }
}

impl ChainWalk {
    /// Check the next row; `false` once a problem is found (later rows are not looked at).
    pub fn step(&mut self, row: &LedgerRow) -> bool {
        if self.problem.is_some() {
            return false;
        }
        self.rows += 1;
        let expected = self.expected_seq;
        self.problem = if row.seq != expected {
            Some(if row.seq > expected {
                format!("row {expected} was removed (the chain jumps from row {} to row {})", expected - 1, row.seq)
            } else {
                format!("row {} is out of order", row.seq)
            })
        } else if row.prev_hash != self.prev {
            Some(format!(
                "row {} ({}) does not follow row {}: its prev_hash does not match (row {} was altered or replaced)",
                row.seq,
                row.entry.id,
                row.seq - 1,
                row.seq - 1
            ))
        } else if hash_of(row.seq, &row.entry, &row.prev_hash) != row.hash {
            Some(format!("row {} ({}) was altered: its contents do not match its hash", row.seq, row.entry.id))
        } else {
            None
        };
        if self.problem.is_none() {
            self.prev.clone_from(&row.hash);
            self.expected_seq += 1;
        }
        self.problem.is_none()
    }

    /// The report: the first problem of the chain, else of its head (`seq`, `hash` as stored;
    /// `None` when no head was ever written), else of a balance.
    pub fn finish(self, head: Option<(i64, String)>, balances: &[Balance]) -> VerifyReport {
        let Self { expected_seq, prev, rows, mut problem } = self;
        let last = expected_seq - 1;
        if problem.is_none() {
            match &head {
                Some((seq, hash)) if *seq != last || *hash != prev => {
                    problem = Some(if *seq > last {
                        format!("rows {} to {seq} were removed from the end of the chain", last + 1)
                    } else {
                        format!("the chain head (row {seq}) does not match the last row ({last})")
                    });
                }
                None if last > 0 => problem = Some("the chain head is missing".to_owned()),
                _ => {}
            }
        }
        if problem.is_none() {
            problem = balances.iter().find(|b| b.balance != b.credits - b.spent).map(|b| {
                format!(
                    "tenant {:?} has balance {}, but its credits ({}) minus its invocations ({}) make {}",
                    b.tenant,
                    b.balance,
                    b.credits,
                    b.spent,
                    b.credits - b.spent
                )
            });
        }
        VerifyReport { rows, head: prev, problem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::temp_db;

    fn entry(i: i64, tokens: i64) -> Entry {
        Entry {
            id: format!("inv-{i}"),
            tenant: "acme".into(),
            key_id: "k".into(),
            ts_us: 1_700_000_000_000_000 + i,
            route: "POST /detect".into(),
            status: 200,
            outcome: Outcome::Answered.as_str().into(),
            fuel: 100 + i,
            wall_us: 1000,
            nn_us: 500,
            peak_memory: 1 << 20,
            pixels: 10,
            tokens,
            cache_hit: false,
            replay: false,
            idempotency_key: None,
            replay_of: None,
        }
    }

    fn ledger_with_rows(name: &str, n: i64) -> (Db, std::path::PathBuf) {
        let (db, dir) = temp_db(name);
        db.create_key("acme", 10_000).unwrap();
        for i in 1..=n {
            let (row, balance) = db.record(&entry(i, 7), None).unwrap();
            assert_eq!(row.seq, i);
            assert_eq!(balance, 10_000 - 7 * i);
        }
        (db, dir)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (db, dir) = ledger_with_rows("intact", 5);
        let report = db.verify().unwrap();
        assert_eq!(report.problem, None);
        assert_eq!(report.rows, 5);
        assert_eq!(report.head.len(), 64);
        assert_eq!(db.totals("acme").unwrap(), (5, 35));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_edited_row_is_named() {
        let (db, dir) = ledger_with_rows("edited", 5);
        db.lock().execute("UPDATE invocations SET tokens = 1 WHERE seq = 3", []).unwrap();
        let problem = db.verify().unwrap().problem.unwrap();
        assert!(problem.starts_with("row 3 (inv-3) was altered"), "{problem}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_removed_row_is_named() {
        let (db, dir) = ledger_with_rows("removed", 5);
        db.lock().execute("DELETE FROM invocations WHERE seq = 2", []).unwrap();
        let problem = db.verify().unwrap().problem.unwrap();
        assert!(problem.starts_with("row 2 was removed"), "{problem}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_removed_last_row_is_named() {
        let (db, dir) = ledger_with_rows("tail", 5);
        db.lock().execute("DELETE FROM invocations WHERE seq = 5", []).unwrap();
        let problem = db.verify().unwrap().problem.unwrap();
        assert!(problem.contains("rows 5 to 5 were removed"), "{problem}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_rehashed_row_breaks_the_next_link() {
        let (db, dir) = ledger_with_rows("rehashed", 4);
        // Alter row 2 and recompute its own hash: row 3 no longer follows it.
        let conn = db.lock();
        let mut row: LedgerRow =
            conn.query_row(&format!("SELECT {COLUMNS} FROM invocations WHERE seq = 2"), [], read_row).unwrap();
        row.entry.tokens = 0;
        let hash = hash_of(2, &row.entry, &row.prev_hash);
        conn.execute("UPDATE invocations SET tokens = 0, hash = ?1 WHERE seq = 2", params![hash]).unwrap();
        drop(conn);
        let problem = db.verify().unwrap().problem.unwrap();
        assert!(problem.starts_with("row 3 (inv-3) does not follow row 2"), "{problem}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_tampered_balance_is_named() {
        let (db, dir) = ledger_with_rows("balance", 2);
        db.lock().execute("UPDATE tenants SET balance = balance + 1000", []).unwrap();
        let problem = db.verify().unwrap().problem.unwrap();
        assert!(problem.contains("tenant \"acme\" has balance"), "{problem}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn answers_are_stored_with_their_row_and_other_tenants_rows_are_hidden() {
        let (db, dir) = ledger_with_rows("answers", 0);
        let answer = StoredAnswer {
            tenant: "acme".into(),
            key: "k1".into(),
            request_sha256: "r".into(),
            invocation_id: "inv-1".into(),
            created_us: 5,
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        };
        db.record(&entry(1, 3), Some(&answer)).unwrap();
        assert_eq!(db.stored_answer("acme", "k1", 0).unwrap(), Some(answer));
        assert_eq!(db.stored_answer("acme", "k1", 6).unwrap(), None, "expired");
        assert_eq!(db.stored_answer("other", "k1", 0).unwrap(), None);
        assert!(db.invocation("acme", "inv-1").unwrap().is_some());
        assert!(db.invocation("other", "inv-1").unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
