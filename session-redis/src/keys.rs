//! Where everything lives in Redis: the key layout.
//!
//! ```text
//! <prefix>{<bucket>}:r:<keyhex>   string: one session record (see record.rs)
//! <prefix>{<bucket>}:idx          sorted set: keyhex -> expires_ms, per bucket
//! <prefix>{<bucket>}:w:<token>    string: receipt of one applied write
//! <prefix>{o:<ownerhash>}:owner   sorted set: keyhex -> expires_ms, per owner
//! <prefix>{o:<ownerhash>}:lock    string: the per-owner login lock
//! ```
//!
//! The part in braces is the Redis Cluster hash tag, so a session's record,
//! its bucket index and the receipts of writes to it always share a slot,
//! and so do an owner's index and lock.
//!
//! Records are named `:r:`, not `:s:`: the format before the one-string
//! record kept each session in a hash named `:s:`, and a new name keeps
//! such a hash (left over from an upgrade) from standing where a string
//! record is expected. The old hashes expire by themselves.

use fred::bytes::Bytes;
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

/// What names a session record, after the bucket tag. (`s:` named the
/// hashes of the format before.)
const RECORD_INFIX: &[u8] = b"r:";

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A storage key in lowercase hex: how index members and record names
/// name a session.
pub(crate) type KeyHex = [u8; 64];

/// The key names of one store, with each bucket's fixed names made once.
/// Names are bytes, as they go to Redis.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
    buckets: u16,
    /// `<prefix>{<bucket>}:` for each bucket.
    tags: Vec<Box<[u8]>>,
    /// `<prefix>{<bucket>}:idx` for each bucket (cheap to clone).
    indexes: Vec<Bytes>,
}

impl Layout {
    /// `prefix` must not contain `{` or `}` (checked by the builder).
    pub(crate) fn new(prefix: String, buckets: u16) -> Self {
        let buckets = buckets.clamp(1, MAX_BUCKETS);
        let tags: Vec<Box<[u8]>> = (0..buckets)
            .map(|b| format!("{prefix}{{{b}}}:").into_bytes().into())
            .collect();
        let indexes = tags
            .iter()
            .map(|t| Bytes::from([&t[..], b"idx"].concat()))
            .collect();
        Self {
            prefix,
            buckets,
            tags,
            indexes,
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

    fn tag(&self, bucket: u16) -> &[u8] {
        self.tags
            .get(usize::from(bucket))
            .map_or(self.prefix.as_bytes(), |t| &t[..])
    }

    /// `<tag of bucket><middle><tail>`, in one allocation.
    fn name(&self, bucket: u16, middle: &[u8], tail: &[u8]) -> Bytes {
        let tag = self.tag(bucket);
        let mut out = Vec::with_capacity(tag.len() + middle.len() + tail.len());
        out.extend_from_slice(tag);
        out.extend_from_slice(middle);
        out.extend_from_slice(tail);
        out.into()
    }

    /// The session record.
    pub(crate) fn record(&self, key: &StorageKey) -> Bytes {
        self.record_hex(self.bucket(key), &hex(key))
    }

    /// The session record of a key, given in hex, whose bucket is known.
    pub(crate) fn record_hex(&self, bucket: u16, hex: &[u8]) -> Bytes {
        self.name(bucket, RECORD_INFIX, hex)
    }

    /// The expiry index of a bucket: a sorted set of key hex by `expires_ms`.
    pub(crate) fn index(&self, bucket: u16) -> Bytes {
        self.indexes
            .get(usize::from(bucket))
            .cloned()
            .unwrap_or_else(|| self.name(bucket, b"idx", b""))
    }

    /// The receipt of the write made with `token` to a session of
    /// `bucket` (see the scripts).
    pub(crate) fn receipt(&self, bucket: u16, token: &[u8]) -> Bytes {
        self.name(bucket, b"w:", token)
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

/// A storage key in hex.
pub(crate) fn hex(key: &StorageKey) -> KeyHex {
    let mut out = [0u8; 64];
    hex_into(&mut out, key.as_bytes());
    out
}

/// `bytes` in lowercase hex into `out` (twice as long).
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

/// 128 bits of a domain-separated SHA-256 of the owner, in hex: keeps owner
/// names (often e-mail addresses) out of key names and bounds their length.
fn owner_hash(owner: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(OWNER_DOMAIN);
    hasher.update(owner.as_bytes());
    let digest = hasher.finalize();
    let mut out = [0u8; 32];
    hex_into(&mut out, &digest[..16]);
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `prefix` is usable: braces would change the hash tag.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.contains(['{', '}'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::SessionId;

    fn slot(key: &[u8]) -> u16 {
        fred::util::redis_keyslot(key)
    }

    fn text(name: &Bytes) -> &str {
        std::str::from_utf8(name).unwrap()
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
                slot(&layout.receipt(bucket, b"0123abcd"))
            );
        }
    }

    #[test]
    fn names_are_the_prefix_the_bucket_tag_and_what_they_hold() {
        let layout = Layout::new("app:".into(), 64);
        let id = SessionId::generate().unwrap();
        let key = id.storage_key();
        let bucket = layout.bucket(key);
        let expected = format!("app:{{{bucket}}}:r:{}", key.to_hex());
        assert_eq!(text(&layout.record(key)), expected);
        assert_eq!(std::str::from_utf8(&hex(key)).unwrap(), key.to_hex());
        assert_eq!(text(&layout.index(bucket)), format!("app:{{{bucket}}}:idx"));
        assert_eq!(
            text(&layout.receipt(bucket, b"0123abcd")),
            format!("app:{{{bucket}}}:w:0123abcd")
        );
    }

    #[test]
    fn an_owner_index_and_its_lock_share_a_slot_and_hide_the_owner() {
        let layout = Layout::new("app:".into(), 64);
        let index = layout.owner_index("alice@example.com");
        assert_eq!(
            slot(index.as_bytes()),
            slot(layout.owner_lock("alice@example.com").as_bytes())
        );
        assert!(!index.contains("alice"));
        assert_eq!(index.len(), "app:{o:}:owner".len() + 32);
        assert_ne!(index, layout.owner_index("bob@example.com"));
    }

    #[test]
    fn keys_hold_the_hashed_id_only() {
        let layout = Layout::new("app:".into(), 64);
        let id = SessionId::generate().unwrap();
        let record = layout.record(id.storage_key());
        let record = text(&record);
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
