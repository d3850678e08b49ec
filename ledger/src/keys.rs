//! Tenants, their API keys and how a presented key is checked, whatever stores them.
//!
//! An API key looks like `ye_<key id>_<secret>`. Only its SHA-256 is stored; the key is
//! shown once, when created. The key id (public) finds the row, the hash is compared in
//! constant time (`subtle`).

use anyhow::bail;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

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
    Ok(hex::encode(buf))
}

fn digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Tenant names: 1-64 of letters, digits, `-`, `_`, `.`.
pub fn validate_tenant(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        bail!("tenant names are 1-64 letters, digits, '-', '_' or '.', got {name:?}");
    }
    Ok(())
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
    if !bool::from(row.key_sha256.ct_eq(&digest(key))) {
        return Err(AuthError::Invalid);
    }
    if row.revoked_us.is_some() {
        return Err(AuthError::Revoked);
    }
    Ok(Caller { tenant: row.tenant, key_id: id.to_owned() })
}
