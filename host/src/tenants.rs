//! Tenants, their API keys and their prepaid balances.
//!
//! An API key looks like `ye_<key id>_<secret>`. Only its SHA-256 is stored; the key is
//! shown once, when created. The key id (public) finds the row, the hash is compared in
//! constant time.

use anyhow::{Context as _, bail};
use rusqlite::{OptionalExtension as _, params};
use sha2::{Digest, Sha256};

use crate::db::{Db, now_us};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant.
    pub tenant: String,
    /// The API key's id.
    pub key_id: String,
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing API key: send `Authorization: Bearer <key>`")]
    Missing,
    /// Malformed or unknown key.
    #[error("invalid API key")]
    Invalid,
    /// The key was revoked.
    #[error("this API key was revoked")]
    Revoked,
    /// The store could not be asked (the reason is logged, never shown to the client).
    #[error("the key store is unavailable")]
    Unavailable(String),
}

/// A freshly created key (the only time the secret is known).
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Public id.
    pub id: String,
    /// The full key to give the client.
    pub key: String,
}

/// One row of `keys list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Creation time, µs since the epoch.
    pub created_us: i64,
    /// Revocation time, if revoked.
    pub revoked_us: Option<i64>,
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Tenant names: 1-64 of letters, digits, `-`, `_`, `.`.
pub fn validate_tenant(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        bail!("tenant names are 1-64 letters, digits, '-', '_' or '.', got {name:?}");
    }
    Ok(())
}

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

/// An API key's row, as every store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The tenant it belongs to.
    pub tenant: String,
    /// SHA-256 of the whole key.
    pub key_sha256: Vec<u8>,
    /// When it was revoked, if it was.
    pub revoked_us: Option<i64>,
}

/// A new key and the digest to store (the key itself is never stored).
pub fn generate_key() -> anyhow::Result<(NewKey, Vec<u8>)> {
    let id = random_hex(8)?;
    let key = format!("ye_{id}_{}", random_hex(24)?);
    let key_sha256 = digest(&key);
    Ok((NewKey { id, key }, key_sha256))
}

/// The key id and the whole key of an `Authorization: Bearer ye_<id>_<secret>` value.
pub fn bearer_key(authorization: Option<&str>) -> Result<(&str, &str), AuthError> {
    let header = authorization.ok_or(AuthError::Missing)?;
    let key = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(AuthError::Missing)?;
    let id =
        key.strip_prefix("ye_").and_then(|rest| rest.split_once('_')).map(|(id, _)| id).ok_or(AuthError::Invalid)?;
    Ok((id, key))
}

/// Check a presented key against the row stored under its id (`None`: no such id): the
/// digest compared in constant time, then revocation.
pub fn check_key(id: &str, key: &str, row: Option<StoredKey>) -> Result<Caller, AuthError> {
    let row = row.ok_or(AuthError::Invalid)?;
    if !constant_time_eq(&row.key_sha256, &digest(key)) {
        return Err(AuthError::Invalid);
    }
    if row.revoked_us.is_some() {
        return Err(AuthError::Revoked);
    }
    Ok(Caller { tenant: row.tenant, key_id: id.to_owned() })
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
    use crate::db::temp_db;

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
