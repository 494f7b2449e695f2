//! The server-side Lua scripts.
//!
//! Every script touches keys of one hash slot only (declared in `KEYS`) and
//! answers with a status rather than raising errors, so a conflict is an
//! answer, not a failure. They read records by position (see `record.rs`
//! for the layout) with `GETRANGE`, which never copies the data, and check
//! the header as strictly as `record.rs` decodes it: a field that is not
//! exactly what `record.rs` writes (for a time, a sign and 19 digits within
//! the range of an `i64`; for the owner length, 4 digits, at most
//! [`MAX_OWNER_LEN`](session_core::MAX_OWNER_LEN) and within the value)
//! reads as `nil`, never as whatever Lua's `tonumber` would make of it
//! (`1e5`, `0x1f`, ` inf`, `nan`). A record whose header does not read, or
//! whose owner is cut short or not UTF-8, or a key of another type where a
//! record belongs, is *corrupt*: save, touch and rotate answer `CORRUPT`
//! and write nothing; destroy and purge delete it.
//!
//! The session-slot scripts take the store clock's `now` as an argument and
//! treat a sound record as live only if its expiry is after `now`.
//!
//! Each script reads and checks everything before its first write, so a
//! refused write changes nothing. Redis does not roll back a script that
//! fails part-way, so nothing after the first write can fail on data a
//! session record may hold: records are read with `redis.pcall` (a key of
//! another type is corrupt, not an error), every number a script hands to
//! Redis is one it parsed strictly or clamped, and every deadline is at most
//! [`LATEST_DEADLINE_MS`]. Only an index key of the wrong type planted
//! under the prefix could make a command fail; out of memory stops a script
//! only before its first write.
//!
//! # Receipts
//!
//! fred re-sends a command whose connection broke before the reply came,
//! so a script may run twice. The scripts that must answer a re-sent call
//! as they answered the first (save, rotate, destroy, purge) therefore
//! take a receipt key named by a fresh token (the last key, in the
//! record's slot; its lifetime in milliseconds is the first argument) and,
//! when they change something, store their reply there. A re-sent call
//! finds the receipt and returns the first run's reply without running
//! again. A call that changed nothing leaves no receipt: running it again
//! is as good as running it once.
//!
//! A touch needs no receipt: it only ever moves a record's activity
//! forward, so a re-sent (or late) touch changes nothing that a later
//! write set.

/// The latest deadline (Unix ms) the store gives Redis, as a native expiry
/// (`PXAT`, `PEXPIREAT`) or an index score: the last millisecond of the
/// year 9999. A session whose deadline is later (an idle timeout of
/// `Duration::MAX` saturates at `i64::MAX`) keeps its exact deadline in its
/// record, but Redis is told this one. Redis itself takes expiries up to
/// `i64::MAX`, but a Cluster moving a key (`MIGRATE`) sends its remaining
/// time and the receiving node adds its own clock: near `i64::MAX` that
/// overflows and the key is dropped as already expired. This bound leaves
/// ample room, and Lua (whose numbers are doubles) holds every
/// millisecond up to it exactly.
pub(crate) const LATEST_DEADLINE_MS: i64 = 253_402_300_799_999;

/// [`LATEST_DEADLINE_MS`] as Lua source.
macro_rules! latest {
    () => {
        "253402300799999"
    };
}

/// A Lua pattern for 19 decimal digits.
macro_rules! d19 {
    () => {
        "%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d"
    };
}

/// Helpers shared by the session-slot scripts.
macro_rules! prelude {
    () => {
        concat!(
            "local LATEST = ",
            latest!(),
            r#"
-- A deadline as PEXPIREAT and ZADD take it: an integer, at most LATEST.
local function ms(x)
  if x > LATEST then x = LATEST end
  return string.format('%.0f', x)
end
-- A record's index member: its storage key in hex, the end of its name.
local function member(rec) return string.sub(rec, -64) end
-- Whether `d`, a string of 11 to 20 digits, is at most `max`, digits as
-- many: compared in two halves that doubles hold exactly (not as strings,
-- which Lua compares by locale).
local function within(d, max)
  local h = #d - 10
  local a, b = tonumber(string.sub(d, 1, h)), tonumber(string.sub(max, 1, h))
  return a < b or (a == b and tonumber(string.sub(d, h + 1)) <= tonumber(string.sub(max, h + 1)))
end
-- Whether the 19 digits after the sign at `at` in `h` are within the
-- range of an i64. Only a first digit of 9 needs the full comparison.
local function in_range(h, at)
  if string.byte(h, at + 1) < 57 then return true end
  local limit = '9223372036854775807'
  if string.byte(h, at) == 45 then limit = '9223372036854775808' end
  return within(string.sub(h, at + 1, at + 19), limit)
end
-- A time field as record.rs writes it (a sign and 19 digits, within the
-- range of an i64) as a number; nil for anything else.
local function time(f)
  if not string.find(f, '^[+-]"#,
            d19!(),
            r#"$') or not in_range(f, 1) then return nil end
  return tonumber(f)
end
local NO_TIME = '                    '
-- The header at the start of `h`, checked as strictly as record.rs decodes
-- it: {expires, last, owner_len}, or nil if `h` does not start with a
-- header of this format. One pattern checks the characters of the format,
-- version and three times at once (a field at a time costs several times
-- as much, and every write reads a header).
local function header(h)
  if #h < 105 or not string.find(h, '^1"#,
            d19!(),
            r#"%d[+-]"#,
            d19!(),
            r#"[+-]"#,
            d19!(),
            r#"[+-]"#,
            d19!(),
            r#"') then
    return nil
  end
  if string.byte(h, 2) ~= 48 and not within(string.sub(h, 2, 21), '18446744073709551615') then
    return nil
  end
  if not (in_range(h, 22) and in_range(h, 42) and in_range(h, 62)) then return nil end
  local absolute = string.sub(h, 82, 101)
  if absolute ~= NO_TIME and time(absolute) == nil then return nil end
  if not string.find(h, '^%d%d%d%d', 102) then return nil end
  local n = tonumber(string.sub(h, 102, 105))
  if n > 1024 then return nil end
  return {
    expires = tonumber(string.sub(h, 42, 61)),
    last = tonumber(string.sub(h, 22, 41)),
    owner_len = n,
  }
end
-- What a save or rotation of record `r` (a whole record, well formed, to
-- expire at `at`) over a live stored one (header `m`, first bytes `h`)
-- keeps: the later of the stored and the written activity time and expiry,
-- so one whose clock reading came before a touch that reached Redis first
-- (a touch bumps no version) cannot pull the touch's deadline back. Both
-- are capped by the absolute deadline, which never changes, so the later
-- one is within it. Returns the activity fields to write over `r`'s
-- ('' if `r`'s are the later ones) and the expiry to give Redis. Reads
-- only.
local function later(h, m, r, at)
  local last, expires = time(string.sub(r, 22, 41)), time(string.sub(r, 42, 61))
  if not (last and expires) or (m.last <= last and m.expires <= expires) then return '', at end
  local fields = string.sub(r, 22, 61)
  if m.last > last then fields = string.sub(h, 22, 41) .. string.sub(fields, 21) end
  if m.expires > expires then
    fields = string.sub(fields, 1, 20) .. string.sub(h, 42, 61)
    at = ms(math.max(tonumber(at), m.expires))
  end
  return fields, at
end
-- The record at `rec`, from its first bytes up to offset `to`: nil if there
-- is none, false if it is corrupt (or a key of another type), else its
-- header; and those first bytes.
local function read(rec, to)
  local h = redis.pcall('GETRANGE', rec, 0, to)
  if type(h) ~= 'string' then return false, '' end
  if h == '' then return nil, h end
  return header(h) or false, h
end
-- Whether `s` is UTF-8, as Rust's str requires.
local function utf8(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len, lo, hi = 1, 128, 191
    if c < 128 then len = 1
    elseif c >= 194 and c <= 223 then len = 2
    elseif c >= 224 and c <= 239 then
      len = 3
      if c == 224 then lo = 160 elseif c == 237 then hi = 159 end
    elseif c >= 240 and c <= 244 then
      len = 4
      if c == 240 then lo = 144 elseif c == 244 then hi = 143 end
    else return false end
    for j = 1, len - 1 do
      local b = string.byte(s, i + j)
      if b == nil or b < lo or b > hi then return false end
      lo, hi = 128, 191
    end
    i = i + len
  end
  return true
end
-- The owner of the record at `rec` whose first bytes `h` hold header `m`
-- ('' for none), read again if `h` holds only part of it; nil if the
-- record is cut short or the owner is not UTF-8.
local function owner_of(rec, h, m)
  local n = m.owner_len
  if n == 0 then return '' end
  local o
  if #h >= 105 + n then
    o = string.sub(h, 106, 105 + n)
  else
    o = redis.call('GETRANGE', rec, 105, 104 + n)
  end
  if #o ~= n or not utf8(o) then return nil end
  return o
end
-- The owner of a record as the store sends it (a whole record, well formed).
local function owner_in(r)
  return string.sub(r, 106, 105 + tonumber(string.sub(r, 102, 105)))
end
-- A write's reply: `status`, and if the write ends the binding of the
-- record `m` (read at `rec`, first bytes `h`) to an owner other than
-- `keep`, a space, the record's deadline, a space and that owner, so the
-- caller can drop the entry from the owner's index. Reads only: call it
-- before the first write.
local function unbinding(status, rec, h, m, keep)
  if not m or m.owner_len == 0 then return status end
  local was = owner_of(rec, h, m)
  if was == nil or was == keep then return status end
  local at = m.expires
  if at < 1 then at = 1 end
  return status .. ' ' .. ms(at) .. ' ' .. was
end
-- A bucket index lives as long as its latest entry: raise its expiry to
-- `at` (Unix ms) unless it is later already.
local function extend(idx, at)
  if redis.call('PEXPIREAT', idx, at, 'GT') == 0 and redis.call('PTTL', idx) == -1 then
    redis.call('PEXPIREAT', idx, at)
  end
end
-- Enter the record `rec` in its bucket index `idx` with deadline `at`, and
-- extend the index. When that adds an entry (a first save, a rotation),
-- also drop up to two entries whose deadline passed by `now` and whose
-- record Redis has expired already, so an index stays bounded by its live
-- sessions without a purge. A record still there (Redis's clock behind the
-- store's) keeps its entry for purge_expired, which deletes and counts it.
local function enter(idx, rec, at, now)
  if redis.call('ZADD', idx, at, member(rec)) == 1 then
    local names = string.sub(rec, 1, #rec - 64)
    local due = redis.call('ZRANGEBYSCORE', idx, '-inf', string.format('%.0f', now), 'LIMIT', 0, 2)
    for _, m in ipairs(due) do
      if redis.call('EXISTS', names .. m) == 0 then redis.call('ZREM', idx, m) end
    end
  end
  extend(idx, at)
end
-- Write record `r` at `rec`, to expire at `at`, over the live record `m`
-- (first bytes `h`; nil for an insert) as `later` says, and enter it in
-- the bucket index `idx`. Returns `reply` (a status of 'OK' and what
-- follows it), with 'OK' replaced by 'LATER' and the activity fields kept
-- if the stored ones were later.
local function store(rec, idx, r, at, now, h, m, reply)
  local fields = ''
  if m then fields, at = later(h, m, r, at) end
  redis.call('SET', rec, r, 'PXAT', at)
  if fields ~= '' then
    redis.call('SETRANGE', rec, 21, fields)
    reply = 'LATER' .. fields .. string.sub(reply, 3)
  end
  enter(idx, rec, at, now)
  return reply
end
"#
        )
    };
}

/// The end of the owner-index scripts: the index (`idx`) lives as long as
/// its latest entry, so Redis deletes it once nothing in it is live.
macro_rules! expire_with_latest {
    () => {
        r"
local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
if top[2] then
  local at = tonumber(top[2])
  if at > LATEST then at = LATEST end
  redis.call('PEXPIREAT', idx, string.format('%.0f', at))
end
return 1
"
    };
}

/// Receipt handling around a session-slot script whose reply is a string.
/// `$body` is the body of a function that returns the reply and whether it
/// changed anything.
macro_rules! once {
    ($body:expr) => {
        concat!(
            prelude!(),
            r"
local receipt = KEYS[#KEYS]
local done = redis.call('GET', receipt)
if done then return done end
local function run()
",
            $body,
            r"
end
local reply, changed = run()
if changed then redis.call('SET', receipt, reply, 'PX', ARGV[1]) end
return reply
"
        )
    };
}

/// Insert-only or compare-and-set write of a whole session record.
///
/// KEYS: record, bucket index, receipt.
/// ARGV: receipt ttl, now, expected version field ('' = insert), record,
/// expiry (Unix ms, 1 to [`LATEST_DEADLINE_MS`]), owner the stored record
/// must be bound to ('' = no such check).
///
/// Answers `OK`, `CONFLICT`, `NOTFOUND`, `CORRUPT`, or `REBIND` when the
/// record is not bound to the required owner (nothing written). When the
/// write ends the stored record's binding to another owner (a rebinding,
/// or an owner cleared), `OK` is followed by a space, the stored record's
/// deadline, a space and that owner, so the caller can drop the entry from
/// that owner's index ([`FORGET`]).
///
/// An update keeps the later of the stored and the written activity time
/// and expiry (a late save must not pull back the deadline a touch that
/// reached Redis first set; a touch bumps no version): the stored record's
/// native expiry and its bucket index entry follow the later expiry. When
/// a stored field was kept, `OK` reads `LATER` followed directly by the
/// activity fields stored (40 bytes, as [`TOUCH`] takes them), so the
/// caller's session can hold them.
pub(crate) const SAVE: &str = once!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now, need = tonumber(ARGV[2]), ARGV[6]
local m, h = read(rec, 104 + #need)
if m == false then return 'CORRUPT', false end
local is_live = m ~= nil and m.expires > now
if ARGV[3] == '' then
  if is_live then return 'CONFLICT', false end
else
  if not is_live then return 'NOTFOUND', false end
  if string.sub(h, 2, 21) ~= ARGV[3] then return 'CONFLICT', false end
end
local reply = 'OK'
if need ~= '' then
  if not is_live then return 'REBIND', false end
  local owner = owner_of(rec, h, m)
  if owner == nil then return 'CORRUPT', false end
  if owner ~= need then return 'REBIND', false end
else
  reply = unbinding('OK', rec, h, m, owner_in(ARGV[4]))
end
if ARGV[3] == '' then m = nil end
return store(rec, idx, ARGV[4], ARGV[5], now, h, m, reply), true
"
);

/// Slide a live session's deadline: rewrite its activity and expiry fields
/// in place, data and version untouched, and only forward: a touch whose
/// activity time is not after the stored one changes nothing (so a re-sent
/// or late touch cannot undo a later write).
///
/// KEYS: record, bucket index.
/// ARGV: now, activity fields (last activity and expiry), expiry (Unix ms,
/// 1 to [`LATEST_DEADLINE_MS`]), expected owner ('' = none).
///
/// Answers `{'OK'}`, `{'NOTFOUND'}`, `{'CORRUPT'}`, or `{'OWNER',
/// stored_owner}` (just `{'OWNER'}` for no owner) when the stored owner is
/// not the expected one, whose index must be extended first.
pub(crate) const TOUCH: &str = concat!(
    prelude!(),
    r"
local rec, idx = KEYS[1], KEYS[2]
local now, owner = tonumber(ARGV[1]), ARGV[4]
local m, h = read(rec, 104 + #owner)
if m == false then return {'CORRUPT'} end
if m == nil or m.expires <= now then return {'NOTFOUND'} end
local stored = owner_of(rec, h, m)
if stored == nil then return {'CORRUPT'} end
if stored ~= owner then
  if stored == '' then return {'OWNER'} end
  return {'OWNER', stored}
end
if time(string.sub(ARGV[2], 1, 20)) > m.last then
  redis.call('SETRANGE', rec, 21, ARGV[2])
  redis.call('PEXPIREAT', rec, ARGV[3])
  enter(idx, rec, ARGV[3], now)
end
return {'OK'}
"
);

/// Move a stored session to a new key of the same bucket, writing it as a
/// save does.
///
/// KEYS: old record, new record, bucket index, receipt.
/// ARGV: receipt ttl, now, expected version field, record, expiry (Unix
/// ms, 1 to [`LATEST_DEADLINE_MS`]).
///
/// Answers `OK`, `CONFLICT`, `NOTFOUND` or `CORRUPT`; `OK` is followed, as
/// [`SAVE`]'s, by the old record's deadline and owner if it was bound to
/// one (the owner's index names the old key, which is gone). As a save, it
/// keeps the old record's activity time and expiry where they are later
/// (then answering `LATER` and the fields, as [`SAVE`] does).
pub(crate) const ROTATE: &str = once!(
    r"
local old, new, idx = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[2])
local taken = read(new, 104)
if taken == false then return 'CORRUPT', false end
if taken and taken.expires > now then return 'CONFLICT', false end
local m, h = read(old, 168)
if m == false then return 'CORRUPT', false end
if m == nil or m.expires <= now then return 'NOTFOUND', false end
if string.sub(h, 2, 21) ~= ARGV[3] then return 'CONFLICT', false end
local reply = unbinding('OK', old, h, m, nil)
redis.call('DEL', old)
redis.call('ZREM', idx, member(old))
return store(new, idx, ARGV[4], ARGV[5], now, h, m, reply), true
"
);

/// Delete a session record, whatever it holds (optionally only if it is
/// bound to a given owner; a corrupt record, whose owner cannot be read, is
/// deleted for any owner whose index named it).
///
/// KEYS: record, bucket index, receipt.
/// ARGV: receipt ttl, now, owner required ('' = none).
///
/// Answers `1` if a session was deleted that was not known to be expired
/// (a corrupt record counts as live: loading it fails rather than finding
/// nothing), `0` otherwise; when the deleted record was bound to an owner,
/// followed by a space, its deadline (as its owner index entry holds it),
/// a space and the owner, so the caller can drop that entry ([`FORGET`]).
pub(crate) const DESTROY: &str = once!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now, need = tonumber(ARGV[2]), ARGV[3]
local m, h = read(rec, 104 + math.max(#need, 64))
if m == nil then
  redis.call('ZREM', idx, member(rec))
  return '0', false
end
if need ~= '' and m then
  local owner = owner_of(rec, h, m)
  if owner ~= nil and owner ~= need then return '0', false end
end
local reply = '1'
if m and m.expires <= now then reply = '0' end
reply = unbinding(reply, rec, h, m, nil)
redis.call('DEL', rec)
redis.call('ZREM', idx, member(rec))
return reply, true
"
);

/// Remove the expired and the corrupt sessions among candidates taken from
/// a bucket index.
///
/// KEYS: bucket index, one record per candidate, receipt.
/// ARGV: receipt ttl, now, one member per candidate.
///
/// Answers `{removed, owner...}` (JSON-encoded in its receipt): how many
/// records were deleted and the distinct owners they were bound to.
/// Candidates whose record is gone lose their index entry; candidates that
/// turn out live get their score repaired, and the index its expiry (set
/// to its latest entry's, up or down).
pub(crate) const PURGE: &str = concat!(
    prelude!(),
    r"
local idx, receipt = KEYS[1], KEYS[#KEYS]
local done = redis.call('GET', receipt)
if done then return cjson.decode(done) end
local now = tonumber(ARGV[2])
local removed = 0
local out = {0}
local seen = {}
for i = 2, #KEYS - 1 do
  local member = ARGV[i + 1]
  local m, h = read(KEYS[i], 104)
  local owner = nil
  if m then owner = owner_of(KEYS[i], h, m) end
  if owner and m.expires > now then
    redis.call('ZADD', idx, ms(m.expires), member)
  else
    if redis.call('DEL', KEYS[i]) == 1 then
      removed = removed + 1
      if owner and owner ~= '' and not seen[owner] then
        seen[owner] = true
        out[#out + 1] = owner
      end
    end
    redis.call('ZREM', idx, member)
  end
end
local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', idx, ms(tonumber(top[2]))) end
out[1] = removed
if removed > 0 then redis.call('SET', receipt, cjson.encode(out), 'PX', ARGV[1]) end
return out
"
);

/// Claim a place in an owner's index before a record names that owner: the
/// entry's score is raised to at least the record's new deadline, the index
/// key lives as long as its latest entry, and entries whose score passed
/// are dropped (the records they stood for have expired). Running it twice
/// is as good as once, so it needs no receipt.
///
/// KEYS: owner index. ARGV: now, member, expires (Unix ms, 1 to
/// [`LATEST_DEADLINE_MS`]).
pub(crate) const CLAIM: &str = concat!(
    "local LATEST = ",
    latest!(),
    r"
local idx = KEYS[1]
redis.call('ZREMRANGEBYSCORE', idx, '-inf', string.format('%.0f', tonumber(ARGV[1])))
local score = redis.call('ZSCORE', idx, ARGV[2])
if not score or tonumber(score) < tonumber(ARGV[3]) then
  redis.call('ZADD', idx, ARGV[3], ARGV[2])
end
",
    expire_with_latest!()
);

/// Drop entries from an owner's index whose records the store has just
/// deleted: each given member is removed only if its score is no later
/// than the deleted record's deadline (a login that claimed the key anew
/// since raised it, and keeps it). Entries whose score passed are dropped
/// too, as [`CLAIM`] drops them, and the index then lives as long as its
/// latest entry (Redis deletes it when it is empty). Running it twice is as
/// good as once, so it needs no receipt.
///
/// KEYS: owner index. ARGV: now, then pairs of member and deadline (Unix
/// ms, 1 to [`LATEST_DEADLINE_MS`]).
pub(crate) const FORGET: &str = concat!(
    "local LATEST = ",
    latest!(),
    r"
local idx = KEYS[1]
redis.call('ZREMRANGEBYSCORE', idx, '-inf', string.format('%.0f', tonumber(ARGV[1])))
for i = 2, #ARGV - 1, 2 do
  local score = redis.call('ZSCORE', idx, ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[i + 1]) then
    redis.call('ZREM', idx, ARGV[i])
  end
end
",
    expire_with_latest!()
);

/// Take an owner lock, or confirm this token already holds it (a retry
/// with the same token), renewing its lease.
///
/// KEYS: lock. ARGV: token, ttl_ms. Returns 1 if held by `token`, else 0.
pub(crate) const LOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Release an owner lock if this token still holds it.
///
/// KEYS: lock. ARGV: token.
pub(crate) const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Read the first bytes of several records of one bucket at once: a
/// rotation moves a session between two keys of its bucket in one script,
/// so this sees it under exactly one of them. Reads only.
///
/// KEYS: records, all in one slot. ARGV: how many bytes of each to read.
/// Returns, in the order of KEYS, each record's first bytes (empty if there
/// is none), or the integer 0 for a key of another type.
pub(crate) const PEEK: &str = r"
local out = {}
for i, rec in ipairs(KEYS) do
  local h = redis.pcall('GETRANGE', rec, 0, tonumber(ARGV[1]) - 1)
  if type(h) == 'string' then out[i] = h else out[i] = 0 end
end
return out
";

/// A script with its SHA-1, run with `EVALSHA` and re-sent with `EVAL`
/// (which also caches it again) when the server answers `NOSCRIPT`.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) name: &'static str,
    pub(crate) lua: &'static str,
    pub(crate) sha: fred::types::Value,
}

impl Script {
    fn new(name: &'static str, lua: &'static str) -> Self {
        Self {
            name,
            lua,
            sha: fred::util::sha1_hash(lua).into(),
        }
    }
}

/// Every script the store runs.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub(crate) save: Script,
    pub(crate) touch: Script,
    pub(crate) rotate: Script,
    pub(crate) destroy: Script,
    pub(crate) purge: Script,
    pub(crate) claim: Script,
    pub(crate) forget: Script,
    pub(crate) lock: Script,
    pub(crate) unlock: Script,
    pub(crate) peek: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            save: Script::new("save", SAVE),
            touch: Script::new("touch", TOUCH),
            rotate: Script::new("rotate", ROTATE),
            destroy: Script::new("destroy", DESTROY),
            purge: Script::new("purge", PURGE),
            claim: Script::new("claim", CLAIM),
            forget: Script::new("forget", FORGET),
            lock: Script::new("lock", LOCK),
            unlock: Script::new("unlock", UNLOCK),
            peek: Script::new("peek", PEEK),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 10] {
        [
            &self.save,
            &self.touch,
            &self.rotate,
            &self.destroy,
            &self.purge,
            &self.claim,
            &self.forget,
            &self.lock,
            &self.unlock,
            &self.peek,
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report

    use std::sync::Arc;

    use fred::prelude::{Builder, ClientLike, Config, Value};
    use fred::types::{ClusterHash, CustomCommand};
    use session_core::{MAX_OWNER_LEN, RecordMeta};

    use super::*;
    use crate::record::{self, HEADER_LEN};

    #[test]
    fn the_lua_bound_on_deadlines_is_the_rust_one() {
        assert_eq!(latest!(), LATEST_DEADLINE_MS.to_string());
        assert_eq!(
            LATEST_DEADLINE_MS,
            session_core::to_ms(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_800)
            ) - 1,
            "the last millisecond of 9999-12-31 UTC"
        );
        const { assert!(LATEST_DEADLINE_MS < 1 << 53, "exact in a Lua number") };
        const { assert!(MAX_OWNER_LEN == 1024, "the owner bound in `header`") };
    }

    /// `FORGET` drops an entry only if a login did not claim it anew (a
    /// higher score), drops passed entries, and leaves the index living as
    /// long as its latest entry, or not at all.
    #[tokio::test]
    async fn forget_keeps_an_entry_claimed_anew_and_deletes_an_empty_index() {
        let Some(url) = session_core::testing::service_url("SESSION_TEST_REDIS_URL") else {
            return;
        };
        let client = Builder::from_config(Config::from_url(&url).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        let index = format!("sr-test:forget:{}:{{o:x}}:owner", std::process::id());
        let run = |script: &'static str, args: Vec<Value>| {
            let client = client.clone();
            let index = index.clone();
            async move {
                let eval = CustomCommand::new_static("EVAL", ClusterHash::FirstKey, false);
                let mut argv: Vec<Value> = vec![script.into(), 1.into(), index.into()];
                argv.extend(args);
                client.custom::<Value, Value>(eval, argv).await.unwrap()
            }
        };
        let state = || {
            let client = client.clone();
            let index = index.clone();
            async move {
                let zrange = CustomCommand::new_static("ZRANGE", ClusterHash::FirstKey, false);
                let args: Vec<Value> = vec![
                    index.clone().into(),
                    0.into(),
                    (-1).into(),
                    "WITHSCORES".into(),
                ];
                let entries: Value = client.custom(zrange, args).await.unwrap();
                let at = CustomCommand::new_static("PEXPIRETIME", ClusterHash::FirstKey, false);
                let at: Value = client.custom(at, vec![Value::from(index)]).await.unwrap();
                (format!("{entries:?}"), at.as_i64().unwrap())
            }
        };
        let far = 4_000_000_000_000_i64;
        for (member, score) in [("a", far), ("b", far + 10), ("c", far + 20)] {
            run(CLAIM, vec![1.into(), member.into(), score.into()]).await;
        }
        // `b` was claimed anew (a later deadline than the deleted record's).
        run(
            FORGET,
            vec![
                1.into(),
                "b".into(),
                (far + 5).into(),
                "c".into(),
                (far + 20).into(),
            ],
        )
        .await;
        let (entries, at) = state().await;
        assert!(
            entries.contains("\"b\"") && entries.contains("\"a\""),
            "{entries}"
        );
        assert!(!entries.contains("\"c\""), "{entries}");
        assert_eq!(at, far + 10, "the index lives as long as its latest entry");
        // Passed entries go too, and an index left empty is deleted.
        run(
            FORGET,
            vec![(far + 1).into(), "b".into(), (far + 10).into()],
        )
        .await;
        assert_eq!(state().await.1, -2, "no index is left");
        let _ = client.quit().await;
    }

    /// For each value: whether the Lua prelude reads it as a record header
    /// with a readable owner, and its expiry as Lua formats it.
    const PARSE: &str = concat!(
        prelude!(),
        r"
local out = {}
for i, h in ipairs(ARGV) do
  local m = header(h)
  if m and owner_of(KEYS[1], h, m) ~= nil then
    out[i] = ms(m.expires)
  else
    out[i] = false
  end
end
return out
"
    );

    fn field(at: usize, width: usize, junk: &str, base: &[u8]) -> [Vec<u8>; 2] {
        let (left, right) = (
            format!("{junk:<width$}").into_bytes(),
            format!("{junk:>width$}").into_bytes(),
        );
        [left, right].map(|text| {
            let mut bytes = base.to_vec();
            bytes[at..at + width].copy_from_slice(&text[..width]);
            bytes
        })
    }

    /// The Lua side reads a header exactly when `record.rs` decodes it, for
    /// the forms Lua's `tonumber` would take and `record.rs` refuses.
    #[tokio::test]
    async fn the_scripts_parse_a_header_exactly_as_record_rs_decodes_it() {
        let Some(url) = session_core::testing::service_url("SESSION_TEST_REDIS_URL") else {
            return;
        };
        let meta = |owner: &str, absolute_ms| RecordMeta {
            version: 7,
            created_ms: 1_732_000_000_000,
            last_active_ms: 1_732_000_100_000,
            expires_ms: 1_732_001_900_000,
            absolute_ms,
            owner: (!owner.is_empty()).then(|| Arc::from(owner)),
        };
        let bases = [
            record::encode(&meta("bob", Some(1_732_043_200_000)), b"\x01{}"),
            record::encode(&meta("", None), b"\x01{}"),
        ];
        let numbers = [
            "1e5",
            "1e15",
            "9e99",
            "0x1f",
            "-0x10",
            "inf",
            "+inf",
            "-inf",
            "nan",
            "1.5",
            " 12",
            "12 ",
            "+1e18",
            "+-1",
            "",
            "+",
            "-",
            "+9223372036854775807",
            "-9223372036854775808",
            "+9223372036854775808",
            "-9223372036854775809",
            "+9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "00000000000000000001",
            "+0000000000000000001",
            "-0000000000000000001",
            "+000000000000000001 ",
            "+0000000000000000000",
        ];
        let mut cases: Vec<Vec<u8>> = bases.to_vec();
        for base in &bases {
            for (at, width) in [(1, 20), (21, 20), (41, 20), (61, 20), (81, 20)] {
                for junk in numbers {
                    cases.extend(field(at, width, junk, base));
                }
            }
            for junk in [
                "1.5", "9e99", "inf", "nan", "0x1f", "12", "1025", "1024", "9999", "-001", "+003",
                "0003", "0004", "0005", "0002", "0000", "3", "1e1",
            ] {
                cases.extend(field(101, 4, junk, base));
            }
            cases.push(base[..HEADER_LEN - 1].to_vec());
            let mut other = base.clone();
            other[0] = b'2';
            cases.push(other);
        }
        for owner in [
            &b"\xff\xfe\xfd"[..],
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"\xe0\x80\x80",
            b"\xf4\x90\x80\x80",
            b"\xf0\x9f\x98",
            b"\xf0\x9f\x98\x80",
            "ünïcødé".as_bytes(),
            b"\xe2\x82\xac",
            b"\xef\xbf\xbf",
            b"\xf4\x8f\xbf\xbf",
        ] {
            let mut bytes = bases[1][..HEADER_LEN].to_vec();
            bytes[101..105].copy_from_slice(format!("{:04}", owner.len()).as_bytes());
            bytes.extend_from_slice(owner);
            bytes.extend_from_slice(b"\x01{}");
            cases.push(bytes);
        }
        let long = "x".repeat(MAX_OWNER_LEN);
        cases.push(record::encode(&meta(&long, None), b"\x01{}"));

        let client = Builder::from_config(Config::from_url(&url).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        // A key that does not exist: an owner beyond the value reads as cut
        // short.
        let missing = format!("sr-test:lua-parse:{}:none", std::process::id());
        let mut args: Vec<Value> = vec![PARSE.into(), 1.into(), missing.into()];
        args.extend(cases.iter().map(|c| Value::Bytes(c.clone().into())));
        let eval = CustomCommand::new_static("EVAL", ClusterHash::Random, false);
        let reply: Value = client.custom(eval, args).await.unwrap();
        let Value::Array(read) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(read.len(), cases.len());
        let mut refused = 0;
        for (case, lua) in cases.iter().zip(read) {
            let shown = String::from_utf8_lossy(case);
            match record::decode_meta(case) {
                Ok(meta) => assert_eq!(
                    lua.as_str().as_deref(),
                    Some(format!("{:.0}", meta.expires_ms.min(LATEST_DEADLINE_MS) as f64).as_str()),
                    "Lua must read {shown:?}"
                ),
                Err(_) => {
                    refused += 1;
                    assert!(
                        matches!(lua, Value::Null | Value::Boolean(false)),
                        "Lua read {shown:?} as {lua:?}"
                    );
                }
            }
        }
        assert!(refused > cases.len() / 2, "the cases are mostly garbled");
        let _ = client.quit().await;
    }
}
