//! Session identifiers and the hashed keys that backends store instead.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeError, DecodeSliceError, Engine as _};
use sha2::{Digest, Sha256};

use crate::Error;

/// Bytes of entropy in a generated ID (256 bits).
const GENERATED_BYTES: usize = 32;
/// Characters of a generated ID: 32 bytes in base64url without padding.
const GENERATED_LEN: usize = 43;
/// Shortest accepted ID: 22 base64url characters carry 128 bits.
pub const MIN_ID_LEN: usize = 22;
/// Longest accepted ID. Anything longer is not a session ID this library made
/// and is refused before any hashing or storage work is spent on it.
pub const MAX_ID_LEN: usize = 256;
/// Domain separation for the storage key. Eight bytes, so that a generated
/// 43-character ID hashes in a single SHA-256 block. Bump `v1` if the
/// derivation ever changes; old keys then simply stop matching.
const STORAGE_KEY_DOMAIN: &[u8; 8] = b"sess.v1\0";
/// Domain separation for the public handle (see [`SessionHandle`]).
const HANDLE_DOMAIN: &[u8; 8] = b"hndl.v1\0";

/// An unguessable session identifier: the secret the browser holds.
///
/// A `SessionId` can only be made in two ways: [`SessionId::generate`] (256
/// bits from the operating system's CSPRNG, encoded base64url without padding)
/// or by parsing a string with [`SessionId::parse`] / [`str::parse`], which
/// accepts only well-formed base64url of at least 22 characters (128 bits).
///
/// Stores never see the ID itself: they key everything by
/// [`SessionId::storage_key`], a domain-separated SHA-256 of it, so a dump of
/// the storage yields no usable cookie. The `Debug` output is redacted; the
/// secret is only reachable through [`SessionId::as_str`], which is what a
/// cookie needs.
///
/// ```
/// use session_core::SessionId;
///
/// let id = SessionId::generate()?;
/// assert_eq!(id.as_str().len(), 43);
/// assert_eq!(format!("{id:?}"), "SessionId(<redacted>)");
///
/// let again: SessionId = id.as_str().parse()?;
/// assert_eq!(again, id);
/// assert!("too-short".parse::<SessionId>().is_err());
/// # Ok::<(), session_core::Error>(())
/// ```
#[derive(Clone)]
pub struct SessionId {
    // Shared, so cloning an ID (every load does) does not allocate.
    text: Arc<str>,
    key: StorageKey,
}

impl SessionId {
    /// A fresh ID of 256 bits from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`Error::Backend`] if the operating system cannot provide randomness,
    /// which on supported platforms does not happen after boot.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; GENERATED_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::backend_msg(format!("OS randomness unavailable: {e}")))?;
        let mut text = [0u8; GENERATED_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut text)
            .map_err(|e| Error::backend_msg(format!("encoding a session ID: {e}")))?;
        debug_assert_eq!(written, GENERATED_LEN);
        // The alphabet is ASCII, so this cannot fail; stay panic-free anyway.
        let text = std::str::from_utf8(&text).map_err(|e| Error::backend_msg(e.to_string()))?;
        Ok(Self::from_valid(text))
    }

    /// Parse an ID supplied by a client or a caller.
    ///
    /// Accepts base64url without padding (`A–Z a–z 0–9 - _`), canonical (the
    /// unused low bits of the last character are zero), between
    /// [`MIN_ID_LEN`] (22, i.e. 128 bits) and [`MAX_ID_LEN`] characters.
    ///
    /// # Errors
    /// [`Error::InvalidId`] saying what was wrong. The message never repeats
    /// the rejected input.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.len() < MIN_ID_LEN {
            return Err(Error::InvalidId(format!(
                "{} characters is too short; a session ID needs at least {MIN_ID_LEN} base64url characters (128 bits)",
                text.len()
            )));
        }
        if text.len() > MAX_ID_LEN {
            return Err(Error::InvalidId(format!(
                "{} characters is too long; at most {MAX_ID_LEN} are accepted",
                text.len()
            )));
        }
        if let Some(pos) = text
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(Error::InvalidId(format!(
                "character {} is not in the base64url alphabet (A-Z a-z 0-9 - _, no padding)",
                pos + 1
            )));
        }
        // Alphabet and length are right; the decoder now checks that the
        // length is a possible base64 length and that trailing bits are zero,
        // so every accepted ID has exactly one spelling.
        let mut scratch = [0u8; MAX_ID_LEN];
        URL_SAFE_NO_PAD
            .decode_slice(text, &mut scratch)
            .map_err(|e| Error::InvalidId(not_canonical(&e)))?;
        Ok(Self::from_valid(text))
    }

    fn from_valid(text: &str) -> Self {
        Self {
            key: StorageKey::derive(text),
            text: text.into(),
        }
    }

    /// The ID as the browser holds it. This is the secret: put it in a cookie,
    /// never in a log.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key stores use in place of the ID: a versioned, domain-separated
    /// SHA-256 of it, computed once when the ID is made.
    pub fn storage_key(&self) -> &StorageKey {
        &self.key
    }

    /// The public handle of this session (see [`SessionHandle`]).
    pub fn handle(&self) -> SessionHandle {
        self.key.handle()
    }
}

/// What was wrong with an ID of the right alphabet and length that does not
/// decode, in our words: the decoder's own message quotes the offending
/// character (as a byte value), and an ID's characters are not repeated.
fn not_canonical(error: &DecodeSliceError) -> String {
    match error {
        DecodeSliceError::DecodeError(DecodeError::InvalidLength(len)) => format!(
            "{len} characters is not a length base64url can have (one more than a multiple of 4)"
        ),
        DecodeSliceError::DecodeError(DecodeError::InvalidLastSymbol(..)) => {
            "the last character is not canonical base64url (its unused low bits must be zero)"
                .into()
        }
        _ => "not canonical base64url".into(),
    }
}

impl PartialEq for SessionId {
    /// Compares the hashed keys, so the comparison's timing says nothing
    /// about the secret.
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for SessionId {}

impl std::hash::Hash for SessionId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

impl FromStr for SessionId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What a store keys a session by: `SHA-256("sess.v1\0" || id)`.
///
/// It is not secret in the way the ID is (it cannot be turned back into a
/// cookie), so it may appear in logs and storage. Its text form is 64
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StorageKey([u8; 32]);

impl std::hash::Hash for StorageKey {
    /// Feeds the first 16 bytes: they are SHA-256 output, so they already
    /// carry 128 uniform bits, and half the input halves the cost of the
    /// hash every in-memory lookup pays. Equality still compares all 32.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b] = [&self.0[..8], &self.0[8..16]].map(|half| {
            let mut word = [0u8; 8];
            word.copy_from_slice(half);
            u64::from_le_bytes(word)
        });
        state.write_u64(a);
        state.write_u64(b);
    }
}

impl StorageKey {
    fn derive(id: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(STORAGE_KEY_DOMAIN);
        hasher.update(id.as_bytes());
        Self(hasher.finalize().into())
    }

    /// The 32 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuild a key from bytes a store read back.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key as 64 lowercase hex digits, the form SQL and Redis stores use.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
        out
    }

    /// Parse the 64-hex-digit form back (as read from storage).
    ///
    /// # Errors
    /// [`Error::Codec`] if `hex` is not 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(Error::Codec(format!(
                "a storage key has 64 hex digits, not {}",
                bytes.len()
            )));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out[i] = hi << 4 | lo,
                _ => {
                    return Err(Error::Codec(
                        "a storage key contains a non-hex character".into(),
                    ));
                }
            }
        }
        Ok(Self(out))
    }

    /// The public handle of the session stored under this key.
    pub fn handle(&self) -> SessionHandle {
        let mut hasher = Sha256::new();
        hasher.update(HANDLE_DOMAIN);
        hasher.update(self.0);
        let digest: [u8; 32] = hasher.finalize().into();
        let mut handle = [0u8; 16];
        handle.copy_from_slice(&digest[..16]);
        SessionHandle(handle)
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageKey({})", self.to_hex())
    }
}

fn hex_digit(v: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(v & 0x0f)])
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A stable, public name for one stored session, safe to show to its owner.
///
/// Listing an owner's sessions ("your devices") must let the user end one of
/// them without revealing any session ID. The handle is a further hash of the
/// [`StorageKey`] (128 bits, base64url), so it can neither be used as a cookie
/// nor turned back into the ID. It stays the same while the session lives,
/// and changes when the ID is rotated.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHandle([u8; 16]);

impl SessionHandle {
    /// Parse a handle from its text form (22 base64url characters), as posted
    /// back by a "sign out that device" form.
    ///
    /// # Errors
    /// [`Error::InvalidId`] if `text` is not a handle.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut out = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut out) {
            Ok(16) if text.len() == 22 => Ok(Self(out)),
            _ => Err(Error::InvalidId(
                "a session handle is 22 base64url characters".into(),
            )),
        }
    }
}

impl fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHandle({self})")
    }
}

impl FromStr for SessionHandle {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_43_char_base64url_and_distinct() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_eq!(a.as_str().len(), 43);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(SessionId::parse(a.as_str()).unwrap(), a);
    }

    #[test]
    fn short_ids_are_rejected_and_22_chars_accepted() {
        assert!(matches!(SessionId::parse(""), Err(Error::InvalidId(_))));
        assert!(matches!(
            SessionId::parse(&"A".repeat(21)),
            Err(Error::InvalidId(_))
        ));
        // 22 chars = 132 bits; the last char must leave its 4 spare bits zero.
        SessionId::parse(&"A".repeat(22)).unwrap();
        SessionId::parse("abcdefghijklmnopqrstuw").unwrap();
    }

    #[test]
    fn non_canonical_trailing_bits_are_rejected() {
        // 'B' = 000001: the low 4 bits are spare in a 22-char ID.
        let err = SessionId::parse(&format!("{}B", "A".repeat(21))).unwrap_err();
        assert!(matches!(err, Error::InvalidId(ref m) if m.contains("canonical")));
        // Says which rule, without quoting the character ('B' is byte 66).
        let shown = err.to_string();
        assert!(shown.contains("last character"), "{shown}");
        assert!(!shown.contains("66") && !shown.contains('B'), "{shown}");
    }

    #[test]
    fn impossible_base64_length_is_rejected() {
        // 4n+1 characters cannot come from any byte string.
        let err = SessionId::parse(&"A".repeat(25)).unwrap_err();
        assert!(matches!(err, Error::InvalidId(ref m) if m.contains("25 characters")));
        assert!(!err.to_string().contains("DecodeError"), "{err}");
    }

    #[test]
    fn foreign_characters_and_padding_are_rejected() {
        for bad in [
            format!("{}=", "A".repeat(23)),
            format!("{}+", "A".repeat(23)),
            format!("{}/", "A".repeat(23)),
            format!("{} ", "A".repeat(23)),
            format!("\"{}\"", "A".repeat(22)),
            format!("{}é", "A".repeat(22)),
            format!("{}\0", "A".repeat(23)),
        ] {
            assert!(
                matches!(SessionId::parse(&bad), Err(Error::InvalidId(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn oversized_ids_are_rejected_without_echoing_them() {
        let long = "A".repeat(MAX_ID_LEN + 4);
        let err = SessionId::parse(&long).unwrap_err().to_string();
        assert!(err.contains("too long"));
        assert!(!err.contains(&long));
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let id = SessionId::generate().unwrap();
        let printed = format!("{id:?} {:?}", Some(&id));
        assert!(!printed.contains(id.as_str()));
        assert!(!printed.contains(&id.as_str()[..10]));
    }

    #[test]
    fn storage_key_is_domain_separated_sha256() {
        let id = SessionId::generate().unwrap();
        let mut plain = Sha256::new();
        plain.update(id.as_str().as_bytes());
        let plain: [u8; 32] = plain.finalize().into();
        assert_ne!(
            id.storage_key().as_bytes(),
            &plain,
            "the key must not be a bare hash of the ID"
        );

        let mut expected = Sha256::new();
        expected.update(b"sess.v1\0");
        expected.update(id.as_str().as_bytes());
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(id.storage_key().as_bytes(), &expected);
        assert!(!id.storage_key().to_hex().contains(id.as_str()));
    }

    #[test]
    fn storage_key_hex_round_trips() {
        let id = SessionId::generate().unwrap();
        let hex = id.storage_key().to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(StorageKey::from_hex(&hex).unwrap(), *id.storage_key());
        assert!(StorageKey::from_hex("zz").is_err());
        assert!(StorageKey::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn handle_is_stable_public_and_distinct_from_id_and_key() {
        let id = SessionId::generate().unwrap();
        let handle = id.handle();
        assert_eq!(handle, id.storage_key().handle());
        let text = handle.to_string();
        assert_eq!(text.len(), 22);
        assert_eq!(SessionHandle::parse(&text).unwrap(), handle);
        assert!(!id.as_str().contains(&text));
        assert!(!id.storage_key().to_hex().contains(&text));
        assert!(SessionHandle::parse(id.as_str()).is_err());
        assert!(SessionHandle::parse("").is_err());
    }
}
