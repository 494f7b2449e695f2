//! The store's operations, written once for every database over [`Conn`].
//! Each runs on a blocking thread with one pooled connection.

use std::sync::Arc;
use std::time::Duration;

use session_core::{
    Error, OwnerLimit, OwnerLimitPolicy, RecordMeta, Rotation, SessionData, SessionHandle,
    SessionId, SessionInfo, StorageKey, Touch, Write,
};

use crate::conn::{Conn, is_unique_violation};
use crate::error::OpError;
use crate::sql::{Arg, OwnerRow, PURGE_BATCH, Statements};

/// What a write needs besides the statements: the per-owner limit and how
/// long to wait for an owner's lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) owner: Option<OwnerLimit>,
    pub(crate) lock_wait: Duration,
}

fn to_i64(v: u64) -> Result<i64, OpError> {
    i64::try_from(v)
        .map_err(|_| Error::backend_msg("session version does not fit the BIGINT column").into())
}

/// The live session under `key`, decoded.
pub(crate) fn load<C: Conn>(
    c: &mut C,
    sql: &Statements,
    key: &StorageKey,
    now: i64,
) -> Result<Option<(RecordMeta, SessionData)>, OpError> {
    let rows = c.records(&sql.load, &[Arg::Bytes(key.as_bytes()), Arg::Int(now)])?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let data = SessionData::decode(&row.data)?;
    let version = u64::try_from(row.version).map_err(|_| {
        Error::Codec(format!(
            "stored session has a negative version ({})",
            row.version
        ))
    })?;
    let meta = RecordMeta {
        version,
        created_ms: row.created_ms,
        last_active_ms: row.last_active_ms,
        expires_ms: row.expires_ms,
        absolute_ms: row.absolute_ms,
        owner: row.owner.map(Arc::from),
    };
    Ok(Some((meta, data)))
}

/// The columns of a written row, in `COLUMNS` order, stored under `key`.
fn row_values<'a>(key: &'a StorageKey, w: &'a Write) -> Result<[Arg<'a>; 8], OpError> {
    Ok([
        Arg::Bytes(key.as_bytes()),
        Arg::Int(to_i64(w.meta.version)?),
        Arg::Int(w.meta.created_ms),
        Arg::Int(w.meta.last_active_ms),
        Arg::Int(w.meta.expires_ms),
        Arg::OptInt(w.meta.absolute_ms),
        Arg::OptText(w.meta.owner.as_deref()),
        Arg::Bytes(&w.encoded),
    ])
}

/// Whether `owner` could be stored at all (longer ones have no sessions).
fn storable_owner(sql: &Statements, owner: &str) -> bool {
    sql.max_owner_bytes()
        .is_none_or(|limit| owner.len() <= limit)
}

/// After a conditional write matched no row: was the session there (a
/// version conflict) or not (destroyed, rotated away or expired)?
fn missed<C: Conn>(
    c: &mut C,
    sql: &Statements,
    key: &StorageKey,
    now: i64,
) -> Result<OpError, OpError> {
    let live = c.count(
        &sql.live_count,
        &[Arg::Bytes(key.as_bytes()), Arg::Int(now)],
    )?;
    Ok(if live > 0 {
        Error::Conflict
    } else {
        Error::NotFound
    }
    .into())
}

/// Run the write `f`. If it binds the session to an owner and a per-owner
/// limit is configured, hold that owner's lock and make room first.
/// `current` is where the session is stored now, if it is.
fn guarded<C: Conn, T>(
    c: &mut C,
    sql: &Statements,
    limits: Limits,
    w: &Write,
    current: Option<&StorageKey>,
    f: impl FnOnce(&mut C) -> Result<T, OpError>,
) -> Result<T, OpError> {
    match (limits.owner, w.meta.owner.as_deref()) {
        (Some(limit), Some(owner)) => c.owner_locked(sql, owner, limits.lock_wait, |c| {
            admit(c, sql, limit, owner, current, w.now_ms)?;
            f(c)
        }),
        _ => c.write(f),
    }
}

/// Enforce the per-owner limit for a write binding a session to `owner`,
/// under the owner's lock. A session already bound to `owner` is not a new
/// one; the session being written is never counted twice.
fn admit<C: Conn>(
    c: &mut C,
    sql: &Statements,
    limit: OwnerLimit,
    owner: &str,
    current: Option<&StorageKey>,
    now: i64,
) -> Result<(), OpError> {
    if let Some(key) = current {
        let bound = c.count(
            &sql.owner_bound,
            &[Arg::Bytes(key.as_bytes()), Arg::Int(now), Arg::Text(owner)],
        )?;
        if bound > 0 {
            return Ok(());
        }
    }
    let others: Vec<OwnerRow> = c
        .owner_rows(&sql.owner_list, &[Arg::Text(owner), Arg::Int(now)])?
        .into_iter()
        .filter(|row| current.is_none_or(|key| row.id_hash.as_slice() != key.as_bytes()))
        .collect();
    let max = usize::try_from(limit.max).unwrap_or(usize::MAX);
    let excess = (others.len() + 1).saturating_sub(max);
    if excess == 0 {
        return Ok(());
    }
    match limit.policy {
        OwnerLimitPolicy::EndOldest => {
            for row in others.iter().take(excess) {
                c.exec(
                    &sql.destroy_owned,
                    &[Arg::Bytes(&row.id_hash), Arg::Text(owner), Arg::Int(now)],
                )?;
            }
            tracing::debug!(
                ended = excess,
                "ended an owner's oldest sessions to respect the per-owner limit"
            );
            Ok(())
        }
        _ => Err(Error::TooManySessions { limit: limit.max }.into()),
    }
}

/// Insert-only or compare-and-set, per `w.expected_version`.
fn put<C: Conn>(
    c: &mut C,
    sql: &Statements,
    w: &Write,
    values: &[Arg<'_>; 8],
) -> Result<(), OpError> {
    let Some(expected) = w.expected_version else {
        return if c.insert(sql, values, w.now_ms)? {
            Ok(())
        } else {
            Err(Error::Conflict.into())
        };
    };
    let [
        key,
        version,
        _created,
        last_active,
        expires,
        _absolute,
        owner,
        data,
    ] = *values;
    let args = [
        version,
        last_active,
        expires,
        owner,
        data,
        key,
        Arg::Int(to_i64(expected)?),
        Arg::Int(w.now_ms),
    ];
    if c.exec(&sql.update, &args)? > 0 {
        Ok(())
    } else {
        Err(missed(c, sql, &w.key, w.now_ms)?)
    }
}

pub(crate) fn save<C: Conn>(
    c: &mut C,
    sql: &Statements,
    limits: Limits,
    w: &Write,
) -> Result<(), OpError> {
    let values = row_values(&w.key, w)?;
    let current = w.expected_version.map(|_| w.key);
    guarded(c, sql, limits, w, current.as_ref(), |c| {
        put(c, sql, w, &values)
    })
}

/// Move the session to its new key in one statement (an `UPDATE` of the key
/// column, compare-and-set on the version), or insert it there if it was
/// never stored.
pub(crate) fn rotate<C: Conn>(
    c: &mut C,
    sql: &Statements,
    limits: Limits,
    r: &Rotation,
) -> Result<(), OpError> {
    let w = &r.write;
    let values = row_values(&w.key, w)?;
    let Some(expected) = w.expected_version else {
        return guarded(c, sql, limits, w, None, |c| put(c, sql, w, &values));
    };
    let [
        new_key,
        version,
        _created,
        last_active,
        expires,
        _absolute,
        owner,
        data,
    ] = values;
    let args = [
        new_key,
        version,
        last_active,
        expires,
        owner,
        data,
        Arg::Bytes(r.old_key.as_bytes()),
        Arg::Int(to_i64(expected)?),
        Arg::Int(w.now_ms),
    ];
    guarded(c, sql, limits, w, Some(&r.old_key), |c| {
        match c.exec(&sql.rotate, &args) {
            Ok(0) => Err(missed(c, sql, &r.old_key, w.now_ms)?),
            Ok(_) => Ok(()),
            // A fresh 256-bit ID that is taken: never in practice; retrying
            // draws another.
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict.into()),
            Err(e) => Err(e.into()),
        }
    })
}

/// Slide the deadlines of the live session; data and version stay.
pub(crate) fn touch<C: Conn>(c: &mut C, sql: &Statements, t: &Touch) -> Result<(), OpError> {
    let args = [
        Arg::Int(t.last_active_ms),
        Arg::Int(t.expires_ms),
        Arg::Bytes(t.key.as_bytes()),
        Arg::Int(t.now_ms),
    ];
    // MySQL counts matched rows (CLIENT_FOUND_ROWS), so a touch that changes
    // nothing (same clock reading) still reports its row.
    if c.write(|c| Ok(c.exec(&sql.touch, &args)?))? > 0 {
        Ok(())
    } else {
        Err(Error::NotFound.into())
    }
}

pub(crate) fn destroy<C: Conn>(
    c: &mut C,
    sql: &Statements,
    key: &StorageKey,
    now: i64,
) -> Result<bool, OpError> {
    let args = [Arg::Bytes(key.as_bytes()), Arg::Int(now)];
    Ok(c.write(|c| Ok(c.exec(&sql.destroy, &args)?))? > 0)
}

/// Delete expired rows in batches of [`PURGE_BATCH`], each its own short
/// statement (and, on SQLite, its own write transaction).
pub(crate) fn purge<C: Conn>(c: &mut C, sql: &Statements, now: i64) -> Result<u64, OpError> {
    let mut total = 0u64;
    loop {
        let removed = c.write(|c| Ok(c.exec(&sql.purge, &[Arg::Int(now)])?))?;
        total += removed as u64;
        if removed < PURGE_BATCH {
            return Ok(total);
        }
    }
}

fn count_to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn len<C: Conn>(c: &mut C, sql: &Statements, now: i64) -> Result<u64, OpError> {
    Ok(count_to_u64(c.count(&sql.len, &[Arg::Int(now)])?))
}

pub(crate) fn is_empty<C: Conn>(c: &mut C, sql: &Statements, now: i64) -> Result<bool, OpError> {
    Ok(c.count(&sql.any_live, &[Arg::Int(now)])? == 0)
}

fn stored_key(row: &OwnerRow) -> Result<StorageKey, OpError> {
    let bytes = <[u8; 32]>::try_from(row.id_hash.as_slice()).map_err(|_| {
        Error::Codec(format!(
            "a stored session key has {} bytes, not 32",
            row.id_hash.len()
        ))
    })?;
    Ok(StorageKey::from_bytes(bytes))
}

pub(crate) fn owner_sessions<C: Conn>(
    c: &mut C,
    sql: &Statements,
    owner: &str,
    current: Option<&SessionId>,
    now: i64,
) -> Result<Vec<SessionInfo>, OpError> {
    if !storable_owner(sql, owner) {
        return Ok(Vec::new());
    }
    let rows = c.owner_rows(&sql.owner_list, &[Arg::Text(owner), Arg::Int(now)])?;
    rows.iter()
        .map(|row| {
            let key = stored_key(row)?;
            Ok(SessionInfo::new(
                &key,
                row.created_ms,
                row.last_active_ms,
                row.expires_ms,
                current,
            ))
        })
        .collect()
}

pub(crate) fn count_owner_sessions<C: Conn>(
    c: &mut C,
    sql: &Statements,
    owner: &str,
    now: i64,
) -> Result<u64, OpError> {
    if !storable_owner(sql, owner) {
        return Ok(0);
    }
    Ok(count_to_u64(c.count(
        &sql.owner_count,
        &[Arg::Text(owner), Arg::Int(now)],
    )?))
}

/// Find the owner's session with this handle among the owner's rows (the
/// handle is a hash of the key, so it cannot be looked up directly), then
/// delete it if it is still the owner's and live.
pub(crate) fn destroy_owner_session<C: Conn>(
    c: &mut C,
    sql: &Statements,
    owner: &str,
    handle: &SessionHandle,
    now: i64,
) -> Result<bool, OpError> {
    if !storable_owner(sql, owner) {
        return Ok(false);
    }
    let rows = c.owner_rows(&sql.owner_list, &[Arg::Text(owner), Arg::Int(now)])?;
    let mut target = None;
    for row in &rows {
        let key = stored_key(row)?;
        if key.handle() == *handle {
            target = Some(key);
            break;
        }
    }
    let Some(key) = target else {
        return Ok(false);
    };
    let args = [Arg::Bytes(key.as_bytes()), Arg::Text(owner), Arg::Int(now)];
    Ok(c.write(|c| Ok(c.exec(&sql.destroy_owned, &args)?))? > 0)
}

pub(crate) fn destroy_owner_sessions<C: Conn>(
    c: &mut C,
    sql: &Statements,
    owner: &str,
    keep: Option<&StorageKey>,
    now: i64,
) -> Result<u64, OpError> {
    if !storable_owner(sql, owner) {
        return Ok(0);
    }
    let removed = c.write(|c| {
        Ok(match keep {
            Some(key) => c.exec(
                &sql.destroy_owner_except,
                &[Arg::Text(owner), Arg::Int(now), Arg::Bytes(key.as_bytes())],
            )?,
            None => c.exec(&sql.destroy_owner, &[Arg::Text(owner), Arg::Int(now)])?,
        })
    })?;
    Ok(removed as u64)
}
