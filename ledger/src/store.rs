//! Where a host keeps its state: tenants, API keys, credits, the invocation ledger and the
//! answers kept for idempotent replays.
//!
//! [`Store`] is what the request path and the admin commands use; two backends implement it:
//! - SQLite ([`crate::sqlite::Db`], the embedded default): one file in the data directory, for
//!   one host;
//! - PostgreSQL ([`crate::postgres::PgStore`]), chosen by `--database-url postgres://...` or
//!   `[database] url`: one database shared by any number of hosts behind a load balancer.
//!
//! Both give the same guarantees: the ledger row, the charge and a kept answer are committed
//! in one transaction before the answer leaves; the rows form one hash chain (`ledger verify`);
//! a request repeated under an `Idempotency-Key` runs once. With several hosts a repeat that
//! arrives while another host runs the first waits for it ([`Store::hold_key`]).

use std::time::Duration;

use async_trait::async_trait;

use crate::chain::{Entry, LedgerRow, StoredAnswer, VerifyReport};
use crate::holds::{HoldOutcome, HoldRequest};
use crate::keys::{AuthError, Caller, KeyInfo, NewKey};
use crate::usage::{Period, UsageReport};

/// Released when dropped: while held, no other host runs a request with the same
/// `(tenant, Idempotency-Key)`.
pub struct KeyHold(Option<Box<dyn Send + Sync>>);

impl KeyHold {
    /// Nothing to hold: the store has one host (SQLite), whose own in-process coordination
    /// is enough.
    pub fn local() -> Self {
        Self(None)
    }

    /// Hold `lock` until this is dropped.
    pub fn new(lock: impl Send + Sync + 'static) -> Self {
        Self(Some(Box::new(lock)))
    }
}

impl std::fmt::Debug for KeyHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "KeyHold(shared)" } else { "KeyHold(local)" })
    }
}

/// The state of the hosts: see the module documentation.
#[async_trait]
pub trait Store: Send + Sync {
    /// Where it is, for logs (never a password).
    fn describe(&self) -> String;

    /// Check an `Authorization` header value.
    async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError>;

    /// A tenant's balance, `None` for an unknown tenant.
    async fn balance(&self, tenant: &str) -> anyhow::Result<Option<i64>>;

    /// Append `entry` to the chain, charge its tokens, release its `hold` (the call's hold,
    /// by id: captured) and keep `answer` (for idempotent replays) in one transaction, durable
    /// on return: the row and what the tenant has left (its balance less open holds).
    async fn record(
        &self,
        entry: Entry,
        answer: Option<StoredAnswer>,
        hold: Option<String>,
    ) -> anyhow::Result<(LedgerRow, i64)>;

    /// Reserve part of a tenant's balance for a call about to run, in one atomic step with
    /// the check that its balance less open holds covers it ([`crate::holds`]).
    async fn hold_tokens(&self, hold: &HoldRequest) -> anyhow::Result<HoldOutcome>;

    /// Release a hold without charging anything (its call wrote no row); nothing when it is
    /// gone already.
    async fn release_hold(&self, id: &str) -> anyhow::Result<()>;

    /// Release the holds whose lease ended before `now_us`; how many.
    async fn release_expired_holds(&self, now_us: i64) -> anyhow::Result<u64>;

    /// The answer kept for `(tenant, key)`, if it was stored at or after `since_us`.
    async fn stored_answer(&self, tenant: &str, key: &str, since_us: i64) -> anyhow::Result<Option<StoredAnswer>>;

    /// Hold `(tenant, key)` against other hosts, waiting at most `wait` while another host
    /// holds it (then an error). Held until the returned value is dropped.
    async fn hold_key(&self, tenant: &str, key: &str, wait: Duration) -> anyhow::Result<KeyHold>;

    /// One of `tenant`'s invocations by id (`None` for another tenant's or an unknown id).
    async fn invocation(&self, tenant: &str, id: &str) -> anyhow::Result<Option<LedgerRow>>;

    /// `tenant`'s invocations with `from_us <= ts_us < to_us`, in chain order.
    async fn invocations(&self, tenant: &str, from_us: i64, to_us: i64) -> anyhow::Result<Vec<LedgerRow>>;

    /// `tenant`'s usage in `period`, per UTC day.
    async fn usage(&self, tenant: &str, period: Period) -> anyhow::Result<UsageReport>;

    /// Walk the chain and the balances; report the first problem.
    async fn verify(&self) -> anyhow::Result<VerifyReport>;

    /// Create a key for `tenant` (creating the tenant if new) and credit `initial_credit`.
    async fn create_key(&self, tenant: &str, initial_credit: i64) -> anyhow::Result<NewKey>;

    /// Every key, optionally of one tenant.
    async fn list_keys(&self, tenant: Option<&str>) -> anyhow::Result<Vec<KeyInfo>>;

    /// Revoke a key by id; an error when there is none.
    async fn revoke_key(&self, id: &str) -> anyhow::Result<()>;

    /// Add `tokens` to a tenant's balance (a credits row); the new balance.
    async fn add_credit(&self, tenant: &str, tokens: i64, note: &str) -> anyhow::Result<i64>;
}
