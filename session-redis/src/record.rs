//! How one session is stored: a single Redis string.
//!
//! A fixed-width text header, the owner, then the data as the shared codec
//! encodes it:
//!
//! ```text
//! offset  bytes  field
//!      0      1  record format: '1'
//!      1     20  version, decimal, zero-padded
//!     21     20  last activity, Unix ms: sign and 19 digits
//!     41     20  expiry (idle deadline capped by the absolute one), likewise
//!     61     20  creation, likewise
//!     81     20  absolute deadline, likewise, or 20 spaces for none
//!    101      4  owner length in bytes, decimal (0000: no owner)
//!    105      n  owner
//!  105+n    ...  data
//! ```
//!
//! A load is one `GET`. The scripts read the header (and owner) with
//! `GETRANGE` and parse fields by position, so they never copy the data; a
//! touch rewrites the last-activity and expiry fields in place with one
//! `SETRANGE`. Version, last activity and expiry are adjacent so that a
//! write of new metadata is a single range. Every field has one exact form,
//! which the scripts check as strictly as [`decode`] does (not with Lua's
//! `tonumber`, which would take `1e5`, `0x1f` or ` inf`): a garbled field
//! reads as `nil` there and as a codec error here, while the fields around
//! it stay readable.

use std::sync::Arc;

use session_core::{Error, MAX_OWNER_LEN, RecordMeta, Result};

/// The record format this crate writes and reads.
pub(crate) const FORMAT: u8 = b'1';
/// Width of every numeric field.
const FIELD: usize = 20;
pub(crate) const VERSION_AT: usize = 1;
pub(crate) const LAST_ACTIVE_AT: usize = VERSION_AT + FIELD;
const EXPIRES_AT: usize = LAST_ACTIVE_AT + FIELD;
const CREATED_AT: usize = EXPIRES_AT + FIELD;
const ABSOLUTE_AT: usize = CREATED_AT + FIELD;
const OWNER_LEN_AT: usize = ABSOLUTE_AT + FIELD;
/// Bytes before the owner.
pub(crate) const HEADER_LEN: usize = OWNER_LEN_AT + 4;
/// The longest header and owner: what a metadata read fetches.
pub(crate) const MAX_META_LEN: usize = HEADER_LEN + MAX_OWNER_LEN;

/// The version field as the scripts compare it.
pub(crate) fn version_field(version: u64) -> [u8; FIELD] {
    let mut out = [b'0'; FIELD];
    write_digits(&mut out, version);
    out
}

/// The whole record: header, owner, data.
pub(crate) fn encode(meta: &RecordMeta, data: &[u8]) -> Vec<u8> {
    let owner = meta.owner.as_deref().unwrap_or_default().as_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + owner.len() + data.len());
    out.push(FORMAT);
    out.extend_from_slice(&version_field(meta.version));
    out.extend_from_slice(&time_field(meta.last_active_ms));
    out.extend_from_slice(&time_field(meta.expires_ms));
    out.extend_from_slice(&time_field(meta.created_ms));
    match meta.absolute_ms {
        Some(ms) => out.extend_from_slice(&time_field(ms)),
        None => out.extend_from_slice(&[b' '; FIELD]),
    }
    let mut len = [b'0'; 4];
    // Owners are at most `MAX_OWNER_LEN` (1024) bytes: checked before any
    // write by `Session::prepare_write`.
    write_digits(&mut len, owner.len() as u64);
    out.extend_from_slice(&len);
    out.extend_from_slice(owner);
    out.extend_from_slice(data);
    out
}

/// The last-activity and expiry fields, as a touch writes them at
/// [`LAST_ACTIVE_AT`].
pub(crate) fn activity_fields(last_active_ms: i64, expires_ms: i64) -> [u8; 2 * FIELD] {
    let mut out = [0u8; 2 * FIELD];
    out[..FIELD].copy_from_slice(&time_field(last_active_ms));
    out[FIELD..].copy_from_slice(&time_field(expires_ms));
    out
}

/// The last-activity and expiry times in `fields`, as
/// [`activity_fields`] writes them; `None` for anything else.
pub(crate) fn parse_activity_fields(fields: &[u8]) -> Option<(i64, i64)> {
    if fields.len() != 2 * FIELD {
        return None;
    }
    let (last, expires) = fields.split_at(FIELD);
    Some((time(last)?, time(expires)?))
}

fn time_field(ms: i64) -> [u8; FIELD] {
    let mut out = [b'0'; FIELD];
    out[0] = if ms < 0 { b'-' } else { b'+' };
    write_digits(&mut out[1..], ms.unsigned_abs());
    out
}

/// Right-aligned decimal digits of `n` into `out` (already zero-filled);
/// `out` is wide enough for every value this module writes.
fn write_digits(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
}

/// A stored record split into its metadata and its (still encoded) data.
pub(crate) fn decode(bytes: &[u8]) -> Result<(RecordMeta, &[u8])> {
    let (meta, owner_len) = decode_header(bytes)?;
    let data_at = HEADER_LEN + owner_len;
    Ok((meta, &bytes[data_at..]))
}

/// The metadata from the start of a record (at least the header and the
/// owner; the data may be cut off, as a `GETRANGE` of [`MAX_META_LEN`]
/// bytes leaves it).
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<RecordMeta> {
    decode_header(bytes).map(|(meta, _)| meta)
}

fn decode_header(bytes: &[u8]) -> Result<(RecordMeta, usize)> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Codec(format!(
            "stored record is {} bytes, shorter than its header",
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT {
        return Err(Error::Codec(format!(
            "unknown record format {:?}; it was written by another version or program",
            char::from(bytes[0])
        )));
    }
    let version = digits(&bytes[VERSION_AT..LAST_ACTIVE_AT]).ok_or_else(|| corrupt("version"))?;
    let last_active_ms =
        time(&bytes[LAST_ACTIVE_AT..EXPIRES_AT]).ok_or_else(|| corrupt("last activity"))?;
    let expires_ms = time(&bytes[EXPIRES_AT..CREATED_AT]).ok_or_else(|| corrupt("expiry"))?;
    let created_ms = time(&bytes[CREATED_AT..ABSOLUTE_AT]).ok_or_else(|| corrupt("creation"))?;
    let absolute = &bytes[ABSOLUTE_AT..OWNER_LEN_AT];
    let absolute_ms = if absolute.iter().all(|&b| b == b' ') {
        None
    } else {
        Some(time(absolute).ok_or_else(|| corrupt("absolute deadline"))?)
    };
    let owner_len = digits(&bytes[OWNER_LEN_AT..HEADER_LEN])
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= MAX_OWNER_LEN && HEADER_LEN + n <= bytes.len())
        .ok_or_else(|| corrupt("owner length"))?;
    let owner = match owner_len {
        0 => None,
        n => Some(Arc::from(
            std::str::from_utf8(&bytes[HEADER_LEN..HEADER_LEN + n])
                .map_err(|_| Error::Codec("stored owner is not UTF-8".into()))?,
        )),
    };
    let meta = RecordMeta {
        version,
        created_ms,
        last_active_ms,
        expires_ms,
        absolute_ms,
        owner,
    };
    Ok((meta, owner_len))
}

fn corrupt(field: &str) -> Error {
    Error::Codec(format!("stored record has no valid {field}"))
}

/// An unsigned decimal field: digits only.
fn digits(field: &[u8]) -> Option<u64> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Nineteen digits always fit in a u64; only a twentieth can overflow.
    let (head, last) = field.split_at(field.len().min(19));
    let value = head.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
    match last {
        [] => Some(value),
        [b] => value.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    }
}

/// A signed time field: a sign, then digits.
fn time(field: &[u8]) -> Option<i64> {
    let (&sign, rest) = field.split_first()?;
    let magnitude = digits(rest)?;
    match sign {
        b'+' => i64::try_from(magnitude).ok(),
        b'-' => 0i64.checked_sub_unsigned(magnitude),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(owner: Option<&str>, absolute_ms: Option<i64>) -> RecordMeta {
        RecordMeta {
            version: 7,
            created_ms: 1_732_000_000_000,
            last_active_ms: 1_732_000_100_000,
            expires_ms: 1_732_001_900_000,
            absolute_ms,
            owner: owner.map(Arc::from),
        }
    }

    #[test]
    fn records_round_trip_with_and_without_owner_and_absolute_deadline() {
        for (owner, absolute) in [
            (None, None),
            (Some("user:42"), Some(1_732_043_200_000)),
            (Some("ünïcødé"), None),
        ] {
            let m = meta(owner, absolute);
            let bytes = encode(&m, b"\x01{\"k\":\"v\"}");
            let (decoded, data) = decode(&bytes).unwrap();
            assert_eq!(decoded, m);
            assert_eq!(data, b"\x01{\"k\":\"v\"}");
            assert_eq!(
                decode_meta(&bytes[..HEADER_LEN + owner.map_or(0, str::len)]).unwrap(),
                m
            );
        }
    }

    #[test]
    fn extreme_values_round_trip() {
        let m = RecordMeta {
            version: u64::MAX,
            created_ms: i64::MIN,
            last_active_ms: -1,
            expires_ms: i64::MAX,
            absolute_ms: Some(0),
            owner: Some(Arc::from("x".repeat(MAX_OWNER_LEN))),
        };
        let bytes = encode(&m, b"\x01{}");
        assert_eq!(decode(&bytes).unwrap().0, m);
    }

    #[test]
    fn the_header_is_fixed_width_text() {
        let bytes = encode(&meta(Some("bob"), None), b"\x01{}");
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(
            text,
            concat!(
                "1",
                "00000000000000000007",
                "+0000001732000100000",
                "+0000001732001900000",
                "+0000001732000000000",
                "                    ",
                "0003bob\u{1}{}"
            )
        );
        assert_eq!(&bytes[VERSION_AT..LAST_ACTIVE_AT], &version_field(7));
        assert_eq!(
            &bytes[LAST_ACTIVE_AT..CREATED_AT],
            &activity_fields(1_732_000_100_000, 1_732_001_900_000)
        );
    }

    #[test]
    fn activity_fields_parse_back_and_nothing_else_does() {
        for (last, expires) in [(1_732_000_100_000, 1_732_001_900_000), (-1, i64::MAX)] {
            assert_eq!(
                parse_activity_fields(&activity_fields(last, expires)),
                Some((last, expires))
            );
        }
        let fields = activity_fields(5, 6);
        assert_eq!(parse_activity_fields(&fields[..39]), None);
        let mut bad = fields;
        bad[20] = b'x';
        assert_eq!(parse_activity_fields(&bad), None);
    }

    #[test]
    fn corrupt_records_are_codec_errors() {
        let good = encode(&meta(Some("bob"), Some(5)), b"\x01{}");
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..HEADER_LEN - 1].to_vec(),
            good[..HEADER_LEN + 1].to_vec(), // the owner cut short
            b"not a record at all, but long enough to be one if it were one: \
              more than a hundred and five bytes of text, with no header"
                .to_vec(),
        ];
        for (at, junk) in [
            (0, b'2'),
            (VERSION_AT + 3, b'x'),
            (LAST_ACTIVE_AT, b' '),
            (EXPIRES_AT + 5, b'-'),
            (CREATED_AT, b'0'),
            (ABSOLUTE_AT + 19, b' '),
            (OWNER_LEN_AT, b'9'),
        ] {
            let mut bad = good.clone();
            bad[at] = junk;
            cases.push(bad);
        }
        let mut bad_owner = good.clone();
        bad_owner[HEADER_LEN] = 0xff;
        cases.push(bad_owner);
        for bad in cases {
            assert!(
                matches!(decode(&bad), Err(Error::Codec(_))),
                "{:?} decoded",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn numbers_that_do_not_fit_are_refused() {
        assert_eq!(digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(digits(b"18446744073709551616"), None);
        assert_eq!(time(b"+9223372036854775807"), Some(i64::MAX));
        assert_eq!(time(b"+9223372036854775808"), None);
        assert_eq!(time(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(time(b"-9223372036854775809"), None);
        assert_eq!(time(b"09223372036854775807"), None);
        assert_eq!(digits(b"0042"), Some(42));
        assert_eq!(digits(b"00000000000000000000"), Some(0));
        assert_eq!(digits(b"99999999999999999999"), None);
        assert_eq!(digits(b"1 2"), None);
        assert_eq!(digits(b""), None);
    }
}
