//! The server-side Lua scripts.
//!
//! Every script touches keys of one hash slot only (declared in `KEYS`) and
//! returns a status table rather than raising errors, so a conflict is an
//! answer, not a failure. The session-slot scripts take the store clock's
//! `now` as an argument and treat a record as absent unless its `expires`
//! is a number after `now`: a garbled or missing field never makes a script
//! fail.
//!
//! Each script reads and checks everything before its first write, so a
//! refused write changes nothing. Redis does not roll back a script that
//! fails part-way, so nothing after the first write can fail on data a
//! session record may hold (only a key of the wrong type planted under the
//! prefix could make a command fail; out of memory stops a script only
//! before its first write).
//!
//! # Receipts
//!
//! fred re-sends a command whose connection broke before the reply came,
//! so a script may run twice. The session-slot scripts therefore take a
//! fresh random token per call and, when they change something, store their
//! reply under a *receipt* key named by that token (the last key, in the
//! record's slot; its lifetime in milliseconds is the last argument). A
//! re-sent call finds the receipt and returns the first run's reply without
//! running again. A call that changed nothing leaves no receipt: running it
//! again is as good as running it once.

/// Shared helpers and the receipt handling around a session-slot script.
/// `$body` is the body of a function that returns the reply and whether it
/// changed anything.
macro_rules! once {
    ($body:expr) => {
        concat!(
            r"
local function ms(x) return string.format('%.0f', tonumber(x)) end
local function live(expires, now)
  local e = tonumber(expires)
  return e ~= nil and e > now
end
-- The index key lives as long as its longest-lived member.
local function index_ttl(idx)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', idx, ms(top[2])) end
end
local receipt = KEYS[#KEYS]
local done = redis.call('GET', receipt)
if done then return cjson.decode(done) end
local function run()
",
            $body,
            r"
end
local reply, changed = run()
if changed then redis.call('SET', receipt, cjson.encode(reply), 'PX', ARGV[#ARGV]) end
return reply
"
        )
    };
}

/// Insert-only or compare-and-set write of a session record.
///
/// KEYS: record, bucket index, receipt.
/// ARGV: now, expected version ('' = insert), new version, created,
/// last_active, expires, absolute ('' = none), has owner ('0'/'1'), owner,
/// data, member, same owner required ('0'/'1'), receipt ttl.
///
/// Returns `{'OK'}`, `{'CONFLICT'}`, `{'NOTFOUND'}`, or `{'REBIND'}` when a
/// same-owner write found the record bound otherwise (nothing written).
pub(crate) const SAVE: &str = once!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', rec, 'version', 'expires', 'owner')
local is_live = live(cur[2], now)
if ARGV[2] == '' then
  if is_live then return {'CONFLICT'}, false end
else
  if not is_live then return {'NOTFOUND'}, false end
  if cur[1] ~= ARGV[2] then return {'CONFLICT'}, false end
end
if ARGV[12] == '1' then
  local owner = false
  if ARGV[8] == '1' then owner = ARGV[9] end
  if not is_live or cur[3] ~= owner then return {'REBIND'}, false end
end
redis.call('DEL', rec)
redis.call('HSET', rec, 'version', ARGV[3], 'created', ARGV[4], 'last_active', ARGV[5],
  'expires', ARGV[6], 'data', ARGV[10])
if ARGV[7] ~= '' then redis.call('HSET', rec, 'absolute', ARGV[7]) end
if ARGV[8] == '1' then redis.call('HSET', rec, 'owner', ARGV[9]) end
redis.call('PEXPIREAT', rec, ARGV[6])
redis.call('ZADD', idx, ARGV[6], ARGV[11])
index_ttl(idx)
return {'OK'}, true
"
);

/// Slide a live session's deadline, data and version untouched.
///
/// KEYS: record, bucket index, receipt.
/// ARGV: now, last_active, expires, member, has owner ('0'/'1'), owner,
/// receipt ttl.
///
/// Returns `{'OK'}`, `{'NOTFOUND'}`, or `{'OWNER', stored_owner}` (just
/// `{'OWNER'}` for no owner) when the stored owner is not the expected one,
/// whose index must be extended first.
pub(crate) const TOUCH: &str = once!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', rec, 'expires', 'owner')
if not live(cur[1], now) then return {'NOTFOUND'}, false end
local owner = false
if ARGV[5] == '1' then owner = ARGV[6] end
if cur[2] ~= owner then return {'OWNER', cur[2]}, false end
redis.call('HSET', rec, 'last_active', ARGV[2], 'expires', ARGV[3])
redis.call('PEXPIREAT', rec, ARGV[3])
redis.call('ZADD', idx, ARGV[3], ARGV[4])
index_ttl(idx)
return {'OK'}, true
"
);

/// Move a stored session to a new key of the same bucket, writing it as a
/// save does.
///
/// KEYS: old record, new record, bucket index, receipt.
/// ARGV: now, expected version, new version, created, last_active, expires,
/// absolute, has owner, owner, data, old member, new member, receipt ttl.
///
/// Returns `{'OK'}`, `{'CONFLICT'}` or `{'NOTFOUND'}`.
pub(crate) const ROTATE: &str = once!(
    r"
local old, new, idx = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local target = redis.call('HMGET', new, 'expires')
if live(target[1], now) then return {'CONFLICT'}, false end
local cur = redis.call('HMGET', old, 'version', 'expires')
if not live(cur[2], now) then return {'NOTFOUND'}, false end
if cur[1] ~= ARGV[2] then return {'CONFLICT'}, false end
redis.call('DEL', old, new)
redis.call('ZREM', idx, ARGV[11])
redis.call('HSET', new, 'version', ARGV[3], 'created', ARGV[4], 'last_active', ARGV[5],
  'expires', ARGV[6], 'data', ARGV[10])
if ARGV[7] ~= '' then redis.call('HSET', new, 'absolute', ARGV[7]) end
if ARGV[8] == '1' then redis.call('HSET', new, 'owner', ARGV[9]) end
redis.call('PEXPIREAT', new, ARGV[6])
redis.call('ZADD', idx, ARGV[6], ARGV[12])
index_ttl(idx)
return {'OK'}, true
"
);

/// Delete a session record, whatever its fields hold (optionally only if
/// it is bound to a given owner).
///
/// KEYS: record, bucket index, receipt.
/// ARGV: now, member, owner required ('0'/'1'), owner, receipt ttl.
///
/// Returns `{1}` if a session was deleted that was not known to be expired
/// (a record whose expiry is unreadable counts as live: loading it fails
/// rather than finding nothing), `{0}` otherwise.
pub(crate) const DESTROY: &str = once!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
if redis.call('EXISTS', rec) == 0 then
  redis.call('ZREM', idx, ARGV[2])
  return {0}, false
end
local cur = redis.call('HMGET', rec, 'expires', 'owner')
if ARGV[3] == '1' and cur[2] ~= ARGV[4] then return {0}, false end
redis.call('DEL', rec)
redis.call('ZREM', idx, ARGV[2])
local e = tonumber(cur[1])
if e ~= nil and e <= now then return {0}, true end
return {1}, true
"
);

/// Remove the expired sessions among candidates taken from a bucket index.
///
/// KEYS: bucket index, one record per candidate, receipt.
/// ARGV: now, one member per candidate, receipt ttl.
///
/// Returns `{removed, owner...}`: how many records were deleted and the
/// distinct owners they were bound to. Candidates whose record is gone lose
/// their index entry; candidates that turn out live get their score
/// repaired (and the index its expiry).
pub(crate) const PURGE: &str = once!(
    r"
local idx = KEYS[1]
local now = tonumber(ARGV[1])
local removed = 0
local out = {0}
local seen = {}
for i = 2, #KEYS - 1 do
  local cur = redis.call('HMGET', KEYS[i], 'expires', 'owner')
  if live(cur[1], now) then
    redis.call('ZADD', idx, ms(cur[1]), ARGV[i])
  else
    if redis.call('DEL', KEYS[i]) == 1 then
      removed = removed + 1
      if cur[2] and not seen[cur[2]] then
        seen[cur[2]] = true
        out[#out + 1] = cur[2]
      end
    end
    redis.call('ZREM', idx, ARGV[i])
  end
end
index_ttl(idx)
out[1] = removed
return out, removed > 0
"
);

/// Claim a place in an owner's index before a record names that owner: the
/// entry's score is raised to at least the record's new deadline, the index
/// key lives as long as its latest entry, and entries whose score passed
/// are dropped (the records they stood for have expired). Running it twice
/// is as good as once, so it needs no receipt.
///
/// KEYS: owner index. ARGV: now, member, expires.
pub(crate) const CLAIM: &str = r"
local idx = KEYS[1]
redis.call('ZREMRANGEBYSCORE', idx, '-inf', string.format('%.0f', tonumber(ARGV[1])))
local score = redis.call('ZSCORE', idx, ARGV[2])
if not score or tonumber(score) < tonumber(ARGV[3]) then
  redis.call('ZADD', idx, ARGV[3], ARGV[2])
end
local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', idx, string.format('%.0f', tonumber(top[2]))) end
return 1
";

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

/// A script with its SHA-1, run with `EVALSHA` and re-sent with `EVAL`
/// (which also caches it again) when the server answers `NOSCRIPT`.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) name: &'static str,
    pub(crate) lua: &'static str,
    pub(crate) sha: String,
}

impl Script {
    fn new(name: &'static str, lua: &'static str) -> Self {
        Self {
            name,
            lua,
            sha: fred::util::sha1_hash(lua),
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
    pub(crate) lock: Script,
    pub(crate) unlock: Script,
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
            lock: Script::new("lock", LOCK),
            unlock: Script::new("unlock", UNLOCK),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 8] {
        [
            &self.save,
            &self.touch,
            &self.rotate,
            &self.destroy,
            &self.purge,
            &self.claim,
            &self.lock,
            &self.unlock,
        ]
    }
}
