//! Tenants', keys' and credits' SQL.

use anyhow::{Context as _, bail};
use rusqlite::{OptionalExtension as _, params};

use super::Db;
use crate::keys::{
    AuthError, Caller, KeyInfo, NewKey, StoredKey, bearer_key, check_key, generate_key, validate_tenant,
};
use crate::now_us;

impl Db {
    /// Create a key for `tenant` (creating the tenant with `initial_credit` if new; adding
    /// `initial_credit` to an existing tenant otherwise).
    pub fn create_key(&self, tenant: &str, initial_credit: i64) -> anyhow::Result<NewKey> {
        validate_tenant(tenant)?;
        let (new, key_sha256) = generate_key()?;
        let now = now_us();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO tenants (name, balance, created_us) VALUES (?1, 0, ?2) ON CONFLICT (name) DO NOTHING",
            params![tenant, now],
        )?;
        tx.execute(
            "INSERT INTO api_keys (id, tenant, key_sha256, created_us) VALUES (?1, ?2, ?3, ?4)",
            params![new.id, tenant, key_sha256, now],
        )?;
        if initial_credit != 0 {
            credit_in(&tx, tenant, initial_credit, "initial credit", now)?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// Every key, optionally of one tenant.
    pub fn list_keys(&self, tenant: Option<&str>) -> anyhow::Result<Vec<KeyInfo>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, tenant, created_us, revoked_us FROM api_keys
             WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, created_us",
        )?;
        let rows = stmt.query_map(params![tenant], |r| {
            Ok(KeyInfo { id: r.get(0)?, tenant: r.get(1)?, created_us: r.get(2)?, revoked_us: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revoke a key by id. Errors when it does not exist.
    pub fn revoke_key(&self, id: &str) -> anyhow::Result<()> {
        let n = self.lock().execute(
            "UPDATE api_keys SET revoked_us = COALESCE(revoked_us, ?2) WHERE id = ?1",
            params![id, now_us()],
        )?;
        if n == 0 {
            bail!("no API key with id {id:?} (see `yolo-edge keys list`)");
        }
        Ok(())
    }

    /// Add `tokens` to a tenant's balance (recorded in the credits table). Returns the new balance.
    pub fn add_credit(&self, tenant: &str, tokens: i64, note: &str) -> anyhow::Result<i64> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let balance = credit_in(&tx, tenant, tokens, note, now_us())?;
        tx.commit()?;
        Ok(balance)
    }

    /// A tenant's balance, `None` for an unknown tenant.
    pub fn balance(&self, tenant: &str) -> anyhow::Result<Option<i64>> {
        Ok(self
            .lock()
            .query_row("SELECT balance FROM tenants WHERE name = ?1", params![tenant], |r| r.get(0))
            .optional()?)
    }

    /// Check an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let (id, key) = bearer_key(authorization)?;
        let row = self
            .lock()
            .query_row("SELECT tenant, key_sha256, revoked_us FROM api_keys WHERE id = ?1", params![id], |r| {
                Ok(StoredKey { tenant: r.get(0)?, key_sha256: r.get(1)?, revoked_us: r.get(2)? })
            })
            .optional()
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        check_key(id, key, row)
    }
}

fn credit_in(tx: &rusqlite::Transaction<'_>, tenant: &str, tokens: i64, note: &str, now: i64) -> anyhow::Result<i64> {
    let balance: Option<i64> = tx
        .query_row(
            "UPDATE tenants SET balance = balance + ?2 WHERE name = ?1 RETURNING balance",
            params![tenant, tokens],
            |r| r.get(0),
        )
        .optional()?;
    let balance = balance
        .with_context(|| format!("no tenant {tenant:?} (create one with `yolo-edge keys create --tenant {tenant}`)"))?;
    tx.execute(
        "INSERT INTO credits (tenant, tokens, ts_us, note) VALUES (?1, ?2, ?3, ?4)",
        params![tenant, tokens, now, note],
    )?;
    Ok(balance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::temp_db;

    #[test]
    fn keys_authenticate_revoke_and_only_hashes_are_stored() {
        let (db, dir) = temp_db("keys");
        let k = db.create_key("acme", 500).unwrap();
        assert!(k.key.starts_with(&format!("ye_{}_", k.id)));
        let caller = db.authenticate(Some(&format!("Bearer {}", k.key))).unwrap();
        assert_eq!(caller, Caller { tenant: "acme".into(), key_id: k.id.clone() });
        assert_eq!(db.balance("acme").unwrap(), Some(500));

        assert_eq!(db.authenticate(None), Err(AuthError::Missing));
        assert_eq!(db.authenticate(Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(db.authenticate(Some("Bearer nonsense")), Err(AuthError::Invalid));
        let wrong = format!("Bearer ye_{}_{}", k.id, "0".repeat(48));
        assert_eq!(db.authenticate(Some(&wrong)), Err(AuthError::Invalid));

        let raw = std::fs::read(db.path()).unwrap();
        let secret = k.key.rsplit('_').next().unwrap();
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is not stored");

        db.revoke_key(&k.id).unwrap();
        assert_eq!(db.authenticate(Some(&format!("Bearer {}", k.key))), Err(AuthError::Revoked));
        assert!(db.revoke_key("nope").is_err());
        let listed = db.list_keys(Some("acme")).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].revoked_us.is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn credits_add_up() {
        let (db, dir) = temp_db("credits");
        db.create_key("acme", 100).unwrap();
        assert_eq!(db.add_credit("acme", 50, "top-up").unwrap(), 150);
        db.create_key("acme", 10).unwrap();
        assert_eq!(db.balance("acme").unwrap(), Some(160));
        assert!(db.add_credit("nobody", 5, "x").is_err());
        assert!(db.create_key("bad name!", 0).is_err());
        assert_eq!(db.balance("nobody").unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
