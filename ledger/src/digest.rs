//! Fingerprints: a SHA-256 over a sequence of fields, each written after its length, so that
//! two different sequences never feed the hash the same bytes (`("ab", "c")` and `("a",
//! "bc")` differ). The request fingerprints kept with idempotent answers, the result cache's
//! keys, model fingerprints and the advisory lock ids of idempotency keys are all made here.

use sha2::{Digest, Sha256};

/// A SHA-256 fed field by field.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    /// An empty fingerprint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one field: its length (8 bytes, little-endian), then its bytes.
    pub fn field(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        let bytes = bytes.as_ref();
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Add bytes as they are, without a length: only for the last part (a request's body).
    pub fn rest(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        self.0.update(bytes.as_ref());
        self
    }

    /// The digest.
    pub fn finish(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }

    /// The digest in hex.
    pub fn hex(&self) -> String {
        hex::encode(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_framed_and_the_rest_is_not() {
        let hex = |f: &mut Fingerprint| f.hex();
        assert_ne!(hex(Fingerprint::new().field("ab").field("c")), hex(Fingerprint::new().field("a").field("bc")));
        let mut by_hand = Sha256::new();
        by_hand.update(2u64.to_le_bytes());
        by_hand.update(b"ab");
        by_hand.update(b"tail");
        assert_eq!(hex(Fingerprint::new().field("ab").rest("tail")), hex::encode(by_hand.finalize()));
    }
}
