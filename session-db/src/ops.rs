//! The store's operations, written once for every database over [`Conn`].
//! Each runs on a blocking thread with one pooled connection.

use std::sync::Arc;
use std::time::Duration;

use session_core::{
    Error, OwnerLimit, OwnerLimitPolicy, RecordMeta, Rotation, SessionData, SessionHandle,
    SessionId, SessionInfo, StorageKey, Touch, Write, is_valid_owner,
};

use crate::conn::{Conn, is_unique_violation};
use crate::error::OpError;
use crate::sql::{Arg, OwnerRow, Statements};

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
    // Version 0 means "never stored" to session-core: a row with it would
    // load as a new session whose every save is a conflicting insert.
    // i64::MAX: the next save's version would not fit the column.
    let version = u64::try_from(row.version)
        .ok()
        .filter(|v| *v > 0 && row.version < i64::MAX)
        .ok_or_else(|| {
            Error::Codec(format!(
                "stored session has version {}; versions start at 1 and stay below 2^63 - 1",
                row.version
            ))
        })?;
    let owner = match row.owner {
        None => None,
        Some(bytes) => {
            let owner = String::from_utf8(bytes)
                .map_err(|_| Error::Codec("stored session owner is not UTF-8".to_owned()))?;
            if !is_valid_owner(&owner) {
                return Err(Error::Codec(
                    "stored session owner is not a valid owner key".to_owned(),
                )
                .into());
            }
            Some(Arc::from(owner))
        }
    };
    let meta = RecordMeta {
        version,
        created_ms: row.created_ms,
        last_active_ms: row.last_active_ms,
        expires_ms: row.expires_ms,
        absolute_ms: row.absolute_ms,
        owner,
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

/// `Ok` if a conditional write changed a row, else why not.
fn hit_or_miss<C: Conn>(
    c: &mut C,
    sql: &Statements,
    key: &StorageKey,
    now: i64,
    rows: usize,
) -> Result<(), OpError> {
    if rows > 0 {
        Ok(())
    } else {
        Err(missed(c, sql, key, now)?)
    }
}

/// The per-owner limit and the owner of the write, if the limit applies to
/// it: a limit is configured and the session has an owner.
fn limited(limits: Limits, w: &Write) -> Option<(OwnerLimit, &str)> {
    Some((limits.owner?, w.meta.owner.as_deref()?))
}

/// Enforce the per-owner limit for a write binding a session to `owner`,
/// under the owner's lock. `written`: the key the session being written is
/// stored under, which is never counted among the owner's other sessions.
fn admit<C: Conn>(
    c: &mut C,
    sql: &Statements,
    limit: OwnerLimit,
    owner: &str,
    written: Option<&StorageKey>,
    now: i64,
) -> Result<(), OpError> {
    let others: Vec<OwnerRow> = c
        .owner_rows(&sql.owner_list, &[Arg::Text(owner), Arg::Int(now)])?
        .into_iter()
        .filter(|row| written.is_none_or(|key| row.id_hash.as_slice() != key.as_bytes()))
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

/// Whether the live session under `key` is bound to `owner`.
fn is_bound<C: Conn>(
    c: &mut C,
    sql: &Statements,
    key: &StorageKey,
    owner: &str,
    now: i64,
) -> Result<bool, OpError> {
    Ok(c.count(
        &sql.owner_bound,
        &[Arg::Bytes(key.as_bytes()), Arg::Int(now), Arg::Text(owner)],
    )? > 0)
}

/// Store a never-stored session under `w.key`: insert-only. With a per-owner
/// limit, binding it to its owner happens under the owner's lock.
fn insert_new<C: Conn>(
    c: &mut C,
    sql: &Statements,
    limits: Limits,
    w: &Write,
    values: &[Arg<'_>; 8],
) -> Result<(), OpError> {
    let insert = |c: &mut C, in_transaction| {
        if c.insert(sql, values, w.now_ms, in_transaction)? {
            Ok(())
        } else {
            Err(Error::Conflict.into())
        }
    };
    match limited(limits, w) {
        None => c.write(|c| insert(c, false)),
        // Insert first: a taken key is a Conflict whatever the owner's count;
        // a refusal by the limit rolls the insert back.
        Some((limit, owner)) => c.owner_locked(sql, owner, limits.lock_wait, |c| {
            insert(c, true)?;
            admit(c, sql, limit, owner, Some(&w.key), w.now_ms)
        }),
    }
}

/// A compare-and-set write of the session stored under `current`: `cas`
/// runs the statement and returns the rows it changed; given an owner, it
/// runs the variant that also requires the stored owner to be that owner.
///
/// With a per-owner limit, only a write that binds the session to an owner
/// it does not have yet must count that owner's sessions under the owner's
/// lock. So the write is first tried as one that keeps the owner: most saves
/// of a signed-in user's session succeed there, without the lock. If it
/// misses and the session is live and bound to that owner, the version moved
/// (a conflict); otherwise it is a new binding (or a session that is gone),
/// written under the lock. There the session itself is checked first (live,
/// at the expected version), so a session that is gone is
/// [`NotFound`](Error::NotFound) and a stale version a
/// [`Conflict`](Error::Conflict) whatever the owner's count; only then is
/// the binding admitted, and the compare-and-set still decides (the session
/// may be destroyed while the admission waits for a row): if it misses, or
/// the limit refuses, the transaction rolls back whatever the admission did.
/// Checking with a read rather than writing first means the write holds no
/// row lock of its own session while the admission waits for other rows.
///
/// `moves_key`: the write moves the session to another key (a rotation).
/// Under [`OwnerLimitPolicy::EndOldest`] such a write always takes the
/// owner's lock, bound or not: a login ending the owner's oldest sessions
/// under the lock deletes them by key, and a rotation moving one of them
/// meanwhile would escape it. (Refusing a login deletes nothing.)
#[allow(clippy::too_many_arguments)]
fn compare_and_set<C: Conn>(
    c: &mut C,
    sql: &Statements,
    limits: Limits,
    w: &Write,
    current: &StorageKey,
    expected: i64,
    moves_key: bool,
    cas: impl Fn(&mut C, Option<&str>) -> Result<usize, OpError>,
) -> Result<(), OpError> {
    let now = w.now_ms;
    let Some((limit, owner)) = limited(limits, w) else {
        return c.write(|c| {
            let rows = cas(c, None)?;
            hit_or_miss(c, sql, current, now, rows)
        });
    };
    if !(moves_key && limit.policy == OwnerLimitPolicy::EndOldest) {
        if c.write(|c| cas(c, Some(owner)))? > 0 {
            return Ok(());
        }
        if is_bound(c, sql, current, owner, now)? {
            return Err(Error::Conflict.into());
        }
    }
    c.owner_locked(sql, owner, limits.lock_wait, |c| {
        let unchanged = c.count(
            &sql.version_live,
            &[
                Arg::Bytes(current.as_bytes()),
                Arg::Int(expected),
                Arg::Int(now),
            ],
        )?;
        if unchanged == 0 {
            return Err(missed(c, sql, current, now)?);
        }
        admit(c, sql, limit, owner, Some(current), now)?;
        let rows = cas(c, None)?;
        hit_or_miss(c, sql, current, now, rows)
    })
}

pub(crate) fn save<C: Conn>(
    c: &mut C,
    sql: &Statements,
    limits: Limits,
    w: &Write,
) -> Result<(), OpError> {
    let values = row_values(&w.key, w)?;
    let Some(expected) = w.expected_version else {
        return insert_new(c, sql, limits, w, &values);
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
    ] = values;
    let args = [
        version,
        last_active,
        expires,
        owner,
        data,
        key,
        Arg::Int(to_i64(expected)?),
        Arg::Int(w.now_ms),
        // Only bound by `update_bound`.
        Arg::OptText(w.meta.owner.as_deref()),
    ];
    compare_and_set(
        c,
        sql,
        limits,
        w,
        &w.key,
        to_i64(expected)?,
        false,
        |c, bound| {
            Ok(match bound {
                None => c.exec(&sql.update, &args[..8])?,
                Some(_) => c.exec(&sql.update_bound, &args)?,
            })
        },
    )
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
        return insert_new(c, sql, limits, w, &values);
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
        // Only bound by `rotate_bound`.
        Arg::OptText(w.meta.owner.as_deref()),
    ];
    compare_and_set(
        c,
        sql,
        limits,
        w,
        &r.old_key,
        to_i64(expected)?,
        true,
        |c, bound| {
            let result = match bound {
                None => c.exec(&sql.rotate, &args[..9]),
                Some(_) => c.exec(&sql.rotate_bound, &args),
            };
            match result {
                Ok(rows) => Ok(rows),
                // A fresh 256-bit ID that is taken: never in practice; retrying
                // draws another.
                Err(e) if is_unique_violation(&e) => Err(Error::Conflict.into()),
                Err(e) => Err(e.into()),
            }
        },
    )
}

/// Slide the deadlines of the live session; data and version stay.
pub(crate) fn touch<C: Conn>(c: &mut C, sql: &Statements, t: &Touch) -> Result<(), OpError> {
    let args = [
        Arg::Int(t.expires_ms),
        Arg::Int(t.last_active_ms),
        Arg::Int(t.expires_ms),
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

/// Delete up to [`PURGE_BATCH`](crate::sql::PURGE_BATCH) expired rows in one short statement (on
/// SQLite, its own write transaction); the caller loops while a batch is
/// full.
pub(crate) fn purge_batch<C: Conn>(
    c: &mut C,
    sql: &Statements,
    now: i64,
) -> Result<usize, OpError> {
    c.write(|c| Ok(c.exec(&sql.purge, &[Arg::Int(now)])?))
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
