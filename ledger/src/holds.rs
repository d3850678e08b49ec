//! Holds: the part of a tenant's prepaid balance reserved for calls that are running, so that
//! a burst of concurrent calls can never spend what was not paid in (authorization, then
//! capture, as card payments work).
//!
//! A call is admitted only by [`crate::Store::hold_tokens`], which in one atomic step checks that
//! `balance - held >= tokens` and adds `tokens` to `held`; when the call ends, its real price
//! is captured and its hold released in the transaction that writes its ledger row
//! ([`crate::Store::record`] with the hold's id); a call that ends without a row (refused
//! after admission, or answered by an error before anything ran) releases it
//! ([`crate::Store::release_hold`]). Every hold has a lease: a host that dies mid-call leaves holds
//! that [`crate::Store::release_expired_holds`] frees once their lease has passed (every host sweeps
//! while it runs; a host starting on an SQLite ledger, which only it uses, frees them all).
//! `ledger verify` checks that each tenant's `held` is the sum of its open holds and that no
//! hold outlived its lease by more than [`SWEEP_SLACK_US`].

use std::time::Duration;

/// How long past its lease a hold may stay before `verify` reports it: the sweep runs every
/// few seconds on every host, so a hold older than this was left by a ledger no host serves.
pub const SWEEP_SLACK_US: i64 = 60_000_000;

/// A reservation to make before a call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The hold's id: the id the call's ledger row will have.
    pub id: String,
    /// Whose balance.
    pub tenant: String,
    /// How much of it (at least the call's price, as well as it can be told beforehand).
    pub tokens: i64,
    /// When it is made, µs since the epoch.
    pub now_us: i64,
    /// How long it may stay open before any host frees it.
    pub lease: Duration,
}

impl HoldRequest {
    /// When the lease ends, µs since the epoch.
    pub fn expires_us(&self) -> i64 {
        self.now_us.saturating_add(i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX))
    }
}

/// What [`crate::Store::hold_tokens`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Reserved: what the tenant has left to spend beside it (balance less every open hold).
    Held {
        /// Balance less open holds, this one included.
        available: i64,
    },
    /// Not reserved: the balance less open holds does not cover it (an unknown tenant has 0).
    Insufficient {
        /// Balance less open holds.
        available: i64,
    },
}

/// A tenant's `held` column against its open holds, for `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCheck {
    /// The tenant.
    pub tenant: String,
    /// Its `held` column.
    pub held: i64,
    /// The sum of its open holds.
    pub open: i64,
    /// The lease end of its oldest expired hold (µs), if any.
    pub oldest_expiry_us: Option<i64>,
}

/// The first problem among `checks` at `now_us`, for `verify`.
pub fn held_problem(checks: &[HeldCheck], now_us: i64) -> Option<String> {
    checks.iter().find_map(|c| {
        if c.held != c.open {
            return Some(format!(
                "tenant {:?} has {} tokens held, but its open holds sum to {}",
                c.tenant, c.held, c.open
            ));
        }
        let expired = c.oldest_expiry_us.filter(|e| e.saturating_add(SWEEP_SLACK_US) < now_us)?;
        Some(format!(
            "tenant {:?} has a hold whose lease ended {} s ago and was never released (no host swept it)",
            c.tenant,
            (now_us - expired) / 1_000_000
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(held: i64, open: i64, expiry: Option<i64>) -> HeldCheck {
        HeldCheck { tenant: "acme".into(), held, open, oldest_expiry_us: expiry }
    }

    #[test]
    fn held_must_match_open_holds_and_none_may_outlive_its_lease() {
        let now = 1_000_000_000_000;
        assert_eq!(held_problem(&[check(5, 5, None)], now), None);
        assert!(
            held_problem(&[check(5, 3, None)], now).unwrap().contains("5 tokens held, but its open holds sum to 3")
        );
        assert_eq!(held_problem(&[check(5, 5, Some(now - 1_000))], now), None, "within the sweep's slack");
        let stale = held_problem(&[check(5, 5, Some(now - SWEEP_SLACK_US - 2_000_000))], now).unwrap();
        assert!(stale.contains("never released"), "{stale}");
    }
}
