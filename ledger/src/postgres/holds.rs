//! Holds on PostgreSQL, shared by every host: the check and the reservation are one
//! conditional `UPDATE` of the tenant's row (row-locked, so concurrent holds from any host
//! queue on it and none reads a balance another has already reserved).

use tokio_postgres::Transaction;

use super::PgStore;
use crate::holds::{HeldCheck, HoldOutcome, HoldRequest};

impl PgStore {
    /// Reserve `h.tokens` of the tenant's balance, if balance less open holds covers them.
    pub(crate) async fn hold_tokens(&self, h: &HoldRequest) -> anyhow::Result<HoldOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let held = tx
            .query_opt(
                "UPDATE tenants SET held = held + $2 WHERE name = $1 AND balance - held >= $2
                 RETURNING balance - held",
                &[&h.tenant, &h.tokens],
            )
            .await?;
        let Some(row) = held else {
            let available = tx
                .query_opt("SELECT balance - held FROM tenants WHERE name = $1", &[&h.tenant])
                .await?
                .map_or(0, |r| r.get(0));
            return Ok(HoldOutcome::Insufficient { available });
        };
        tx.execute(
            "INSERT INTO holds (id, tenant, tokens, created_us, expires_us) VALUES ($1, $2, $3, $4, $5)",
            &[&h.id, &h.tenant, &h.tokens, &h.now_us, &h.expires_us()],
        )
        .await?;
        tx.commit().await?;
        Ok(HoldOutcome::Held { available: row.get(0) })
    }

    /// Release the hold `id` without charging anything.
    pub(crate) async fn release_hold(&self, id: &str) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        release_in(&tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Release every hold whose lease ended before `now_us` (whichever host made it).
    pub(crate) async fn release_expired_holds(&self, now_us: i64) -> anyhow::Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // SKIP LOCKED: two hosts sweeping at once take different holds, neither waits.
        let ids: Vec<String> = tx
            .query("SELECT id FROM holds WHERE expires_us < $1 FOR UPDATE SKIP LOCKED", &[&now_us])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for id in &ids {
            release_in(&tx, id).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }
}

/// Every tenant's `held` against its open holds, within `verify`'s snapshot.
pub(crate) async fn held_checks(tx: &Transaction<'_>) -> anyhow::Result<Vec<HeldCheck>> {
    let rows = tx
        .query(
            "SELECT t.name, t.held,
                    COALESCE((SELECT SUM(tokens) FROM holds h WHERE h.tenant = t.name), 0)::BIGINT,
                    (SELECT MIN(expires_us) FROM holds h WHERE h.tenant = t.name)
             FROM tenants t ORDER BY t.name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HeldCheck { tenant: r.get(0), held: r.get(1), open: r.get(2), oldest_expiry_us: r.get(3) })
        .collect())
}

/// Within `tx`: delete the hold `id` and take its tokens off its tenant's `held`; the tokens
/// it held (0 when it was gone already).
pub(crate) async fn release_in(tx: &Transaction<'_>, id: &str) -> anyhow::Result<i64> {
    let Some(gone) = tx.query_opt("DELETE FROM holds WHERE id = $1 RETURNING tenant, tokens", &[&id]).await? else {
        return Ok(0);
    };
    let (tenant, tokens): (String, i64) = (gone.get(0), gone.get(1));
    tx.execute("UPDATE tenants SET held = held - $2 WHERE name = $1", &[&tenant, &tokens]).await?;
    Ok(tokens)
}
