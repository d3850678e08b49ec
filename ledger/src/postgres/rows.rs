//! Rows of the ledger's tables read back into the domain's types.

use anyhow::Context as _;
use tokio_postgres::Row;

use crate::chain::{Entry, LedgerRow, StoredAnswer};

/// A ledger row from the `invocations` columns in [`crate::chain::COLUMNS`] order.
pub(crate) fn read_row(r: &Row) -> anyhow::Result<LedgerRow> {
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

/// A stored idempotent answer from its `idempotency` columns.
pub(crate) fn stored_answer_of(tenant: &str, key: &str, r: &Row) -> anyhow::Result<StoredAnswer> {
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
