//! The ledger's SQL: appending a row with its charge (and a kept answer) in one
//! transaction, reading rows and answers back, and feeding a [`ChainWalk`] for `verify`.

use rusqlite::{OptionalExtension as _, Row, params};

use super::Db;
use super::holds::release_in;
use crate::chain::{Balance, COLUMNS, ChainWalk, Entry, GENESIS, LedgerRow, StoredAnswer, VerifyReport, hash_of};
use crate::holds::held_problem;

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
    pub fn record(
        &self,
        entry: &Entry,
        answer: Option<&StoredAnswer>,
        hold: Option<&str>,
    ) -> anyhow::Result<(LedgerRow, i64)> {
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
        if let Some(id) = hold {
            release_in(&tx, id)?;
        }
        let balance: i64 = tx.query_row(
            "UPDATE tenants SET balance = balance - ?2 WHERE name = ?1 RETURNING balance - held",
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
        let (head, walk, balances) = {
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
            (head, walk, balances)
        };
        let mut report = walk.finish(head, &balances);
        if report.problem.is_none() {
            report.problem = held_problem(&self.held_checks()?, crate::now_us());
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Outcome, hash_of};
    use crate::sqlite::temp_db;

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
            let (row, balance) = db.record(&entry(i, 7), None, None).unwrap();
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
        db.record(&entry(1, 3), Some(&answer), None).unwrap();
        assert_eq!(db.stored_answer("acme", "k1", 0).unwrap(), Some(answer));
        assert_eq!(db.stored_answer("acme", "k1", 6).unwrap(), None, "expired");
        assert_eq!(db.stored_answer("other", "k1", 0).unwrap(), None);
        assert!(db.invocation("acme", "inv-1").unwrap().is_some());
        assert!(db.invocation("other", "inv-1").unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
