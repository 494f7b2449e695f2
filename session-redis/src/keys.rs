//! Where everything lives in Redis: the key layout.
//!
//! ```text
//! <prefix>{<bucket>}:s:<keyhex>   hash: one session record
//! <prefix>{<bucket>}:idx          sorted set: keyhex -> expires_ms, per bucket
//! <prefix>{<bucket>}:w:<token>    string: receipt of one applied write
//! <prefix>{o:<ownerhash>}:owner   sorted set: keyhex -> expires_ms, per owner
//! <prefix>{o:<ownerhash>}:lock    string: the per-owner login lock
//! ```
//!
//! The part in braces is the Redis Cluster hash tag, so a session's record,
//! its bucket index and the receipts of writes to it always share a slot,
//! and so do an owner's index and lock.

use sha2::{Digest, Sha256};

use session_core::StorageKey;

/// Default key prefix.
pub(crate) const DEFAULT_PREFIX: &str = "session:";
/// Default number of buckets.
pub(crate) const DEFAULT_BUCKETS: u16 = 64;
/// Most buckets allowed. Rotating a stored session draws fresh IDs until one
/// lands in the old ID's bucket, which takes `buckets` draws on average.
pub(crate) const MAX_BUCKETS: u16 = 1024;

/// Domain separation for the owner hash in key names.
const OWNER_DOMAIN: &[u8; 8] = b"ownr.v1\0";

/// The key names of one store.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
    buckets: u16,
}

impl Layout {
    /// `prefix` must not contain `{` or `}` (checked by the builder).
    pub(crate) fn new(prefix: String, buckets: u16) -> Self {
        Self {
            prefix,
            buckets: buckets.clamp(1, MAX_BUCKETS),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn buckets(&self) -> u16 {
        self.buckets
    }

    /// The bucket of a session: the first two bytes of its (uniformly
    /// distributed) storage key, modulo the bucket count.
    pub(crate) fn bucket(&self, key: &StorageKey) -> u16 {
        let b = key.as_bytes();
        u16::from_be_bytes([b[0], b[1]]) % self.buckets
    }

    /// The session record: a hash.
    pub(crate) fn record(&self, key: &StorageKey) -> String {
        self.record_in(self.bucket(key), &key.to_hex())
    }

    /// The record key for a key already in hex whose bucket is known.
    pub(crate) fn record_in(&self, bucket: u16, hex: &str) -> String {
        format!("{}{{{bucket}}}:s:{hex}", self.prefix)
    }

    /// The expiry index of a bucket: a sorted set of key hex by `expires_ms`.
    pub(crate) fn index(&self, bucket: u16) -> String {
        format!("{}{{{bucket}}}:idx", self.prefix)
    }

    /// The receipt of the write made with `token` to a session of `bucket`
    /// (see the scripts).
    pub(crate) fn receipt(&self, bucket: u16, token: &str) -> String {
        format!("{}{{{bucket}}}:w:{token}", self.prefix)
    }

    /// The owner's index: a sorted set of key hex by (at least) `expires_ms`.
    pub(crate) fn owner_index(&self, owner: &str) -> String {
        format!("{}{{o:{}}}:owner", self.prefix, owner_hash(owner))
    }

    /// The owner's login lock.
    pub(crate) fn owner_lock(&self, owner: &str) -> String {
        format!("{}{{o:{}}}:lock", self.prefix, owner_hash(owner))
    }
}

/// 128 bits of a domain-separated SHA-256 of the owner, in hex: keeps owner
/// names (often e-mail addresses) out of key names and bounds their length.
fn owner_hash(owner: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(OWNER_DOMAIN);
    hasher.update(owner.as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    out
}

/// Whether `prefix` is usable: braces would change the hash tag.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.contains(['{', '}'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::SessionId;

    fn slot(key: &str) -> u16 {
        fred::util::redis_keyslot(key.as_bytes())
    }

    #[test]
    fn a_session_its_bucket_index_and_its_receipts_share_a_slot() {
        let layout = Layout::new("app:".into(), 64);
        for _ in 0..100 {
            let id = SessionId::generate().unwrap();
            let key = id.storage_key();
            let bucket = layout.bucket(key);
            assert!(bucket < 64);
            assert_eq!(slot(&layout.record(key)), slot(&layout.index(bucket)));
            assert_eq!(
                slot(&layout.record(key)),
                slot(&layout.receipt(bucket, "0123abcd"))
            );
        }
    }

    #[test]
    fn an_owner_index_and_its_lock_share_a_slot_and_hide_the_owner() {
        let layout = Layout::new("app:".into(), 64);
        let index = layout.owner_index("alice@example.com");
        assert_eq!(slot(&index), slot(&layout.owner_lock("alice@example.com")));
        assert!(!index.contains("alice"));
        assert_ne!(index, layout.owner_index("bob@example.com"));
    }

    #[test]
    fn keys_hold_the_hashed_id_only() {
        let layout = Layout::new("app:".into(), 64);
        let id = SessionId::generate().unwrap();
        let record = layout.record(id.storage_key());
        assert!(record.starts_with("app:{"));
        assert!(record.ends_with(&id.storage_key().to_hex()));
        assert!(!record.contains(id.as_str()));
        assert!(!record.contains(&id.as_str()[..16]));
    }

    #[test]
    fn bucket_count_is_clamped_and_braces_are_refused() {
        assert_eq!(Layout::new(String::new(), 0).buckets(), 1);
        assert_eq!(Layout::new(String::new(), u16::MAX).buckets(), MAX_BUCKETS);
        assert!(valid_prefix("session:"));
        assert!(!valid_prefix("a{b}:"));
        assert!(!valid_prefix("}"));
    }
}
