//! The invocation ledger's rules, whatever stores it: one hash-chained row per invocation.
//!
//! Each row's `hash` is the SHA-256 of its canonical form (a JSON array of every column in
//! a fixed order, `prev_hash` included); `prev_hash` is the previous row's `hash` (64 zeros
//! for the first row); `seq` runs 1, 2, 3, ... without gaps; the `chain_head` table holds
//! the last `seq` and `hash`. [`ChainWalk`] walks the chain and names the first row that
//! was altered or removed, and checks that every balance equals its credits minus its
//! invocations. (Rewriting the whole chain from some row on defeats any self-contained
//! chain: keep the printed head hash somewhere else to anchor it.)

use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// The result of [`crate::Store::verify`].
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

/// The hash of row `seq` holding `e` after a row whose hash is `prev_hash`.
pub(crate) fn hash_of(seq: i64, e: &Entry, prev_hash: &str) -> String {
    hex::encode(Sha256::digest(canonical(seq, e, prev_hash).as_bytes()))
}

/// The ledger's columns in the canonical order, as both stores name them.
pub(crate) const COLUMNS: &str = "seq, id, tenant, key_id, ts_us, route, status, outcome, fuel, wall_us, nn_us, \
                       peak_memory, pixels, tokens, cache_hit, replay, idempotency_key, replay_of, prev_hash, hash";

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
