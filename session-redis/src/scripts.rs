//! The server-side Lua scripts.
//!
//! Every script touches keys of one hash slot only (declared in `KEYS`), takes
//! the store clock's `now` as an argument and treats a record whose `expires`
//! is not after `now` as absent. Each returns a status table rather than
//! raising errors, so a conflict is an answer, not a failure.

/// Shared helpers, prepended to the session-slot scripts.
macro_rules! lua {
    ($body:expr) => {
        concat!(
            r"
local function ms(x) return string.format('%.0f', tonumber(x)) end
local function live(expires, now) return expires and tonumber(expires) > now end
-- The index key lives as long as its longest-lived member.
local function index_ttl(idx)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', idx, ms(top[2])) end
end
",
            $body
        )
    };
}

/// Insert-only or compare-and-set write of a session record.
///
/// KEYS: record, bucket index.
/// ARGV: now, expected version ('' = insert), new version, created,
/// last_active, expires, absolute ('' = none), has owner ('0'/'1'), owner,
/// data, member, token, same owner required ('0'/'1').
///
/// Returns `{'OK'}`, `{'OK', old_owner}` when the write moved the session
/// away from `old_owner`, `{'CONFLICT'}`, `{'NOTFOUND'}`, or `{'REBIND'}`
/// when a same-owner write found another owner stored (nothing written).
pub(crate) const SAVE: &str = lua!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', rec, 'version', 'expires', 'owner', 'token')
local is_live = live(cur[2], now)
-- A retried command whose first attempt was applied: report that success.
if is_live and cur[4] == ARGV[12] and cur[1] == ARGV[3] then return {'OK'} end
if ARGV[2] == '' then
  if is_live then return {'CONFLICT'} end
else
  if not is_live then return {'NOTFOUND'} end
  if cur[1] ~= ARGV[2] then return {'CONFLICT'} end
end
local owner = false
if ARGV[8] == '1' then owner = ARGV[9] end
local old_owner = false
if is_live then old_owner = cur[3] end
if ARGV[13] == '1' and old_owner ~= owner then return {'REBIND'} end
redis.call('DEL', rec)
redis.call('HSET', rec, 'version', ARGV[3], 'created', ARGV[4], 'last_active', ARGV[5],
  'expires', ARGV[6], 'data', ARGV[10], 'token', ARGV[12])
if ARGV[7] ~= '' then redis.call('HSET', rec, 'absolute', ARGV[7]) end
if owner then redis.call('HSET', rec, 'owner', owner) end
redis.call('PEXPIREAT', rec, ARGV[6])
redis.call('ZADD', idx, ARGV[6], ARGV[11])
index_ttl(idx)
if old_owner and old_owner ~= owner then return {'OK', old_owner} end
return {'OK'}
"
);

/// Slide a live session's deadline, data and version untouched.
///
/// KEYS: record, bucket index.
/// ARGV: now, last_active, expires, member, has owner ('0'/'1'), owner.
///
/// Returns `{'OK'}`, `{'NOTFOUND'}`, or `{'OWNER', stored_owner}` (or just
/// `{'OWNER'}` for no owner) when the stored owner is not the expected one,
/// whose index must be extended first.
pub(crate) const TOUCH: &str = lua!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', rec, 'expires', 'owner')
if not live(cur[1], now) then return {'NOTFOUND'} end
local owner = false
if ARGV[5] == '1' then owner = ARGV[6] end
if cur[2] ~= owner then return {'OWNER', cur[2]} end
redis.call('HSET', rec, 'last_active', ARGV[2], 'expires', ARGV[3])
redis.call('PEXPIREAT', rec, ARGV[3])
redis.call('ZADD', idx, ARGV[3], ARGV[4])
index_ttl(idx)
return {'OK'}
"
);

/// Move a session to a new key of the same bucket, writing it as a save does.
///
/// KEYS: old record, new record, bucket index.
/// ARGV: now, expected version ('' = never stored), new version, created,
/// last_active, expires, absolute, has owner, owner, data, old member,
/// new member, token.
///
/// Returns `{'OK'}`, `{'OK', old_owner}` (the owner the old record had, whose
/// index still lists the old member), `{'CONFLICT'}` or `{'NOTFOUND'}`.
pub(crate) const ROTATE: &str = lua!(
    r"
local old, new, idx = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local target = redis.call('HMGET', new, 'expires', 'token')
if live(target[1], now) then
  if target[2] == ARGV[13] then return {'OK'} end
  return {'CONFLICT'}
end
local old_owner = false
if ARGV[2] ~= '' then
  local cur = redis.call('HMGET', old, 'version', 'expires', 'owner')
  if not live(cur[2], now) then return {'NOTFOUND'} end
  if cur[1] ~= ARGV[2] then return {'CONFLICT'} end
  old_owner = cur[3]
  redis.call('DEL', old)
  redis.call('ZREM', idx, ARGV[11])
end
redis.call('DEL', new)
redis.call('HSET', new, 'version', ARGV[3], 'created', ARGV[4], 'last_active', ARGV[5],
  'expires', ARGV[6], 'data', ARGV[10], 'token', ARGV[13])
if ARGV[7] ~= '' then redis.call('HSET', new, 'absolute', ARGV[7]) end
if ARGV[8] == '1' then redis.call('HSET', new, 'owner', ARGV[9]) end
redis.call('PEXPIREAT', new, ARGV[6])
redis.call('ZADD', idx, ARGV[6], ARGV[12])
index_ttl(idx)
if old_owner then return {'OK', old_owner} end
return {'OK'}
"
);

/// Delete a session record (optionally only if bound to a given owner).
///
/// KEYS: record, bucket index.
/// ARGV: now, member, owner required ('0'/'1'), owner.
///
/// Returns `{was_live}` or `{was_live, owner}` (0/1); `{0}` if nothing was
/// deleted.
pub(crate) const DESTROY: &str = lua!(
    r"
local rec, idx = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local cur = redis.call('HMGET', rec, 'expires', 'owner')
if not cur[1] then
  if redis.call('EXISTS', rec) == 1 then return {0} end
  redis.call('ZREM', idx, ARGV[2])
  return {0}
end
if ARGV[3] == '1' and cur[2] ~= ARGV[4] then return {0} end
redis.call('DEL', rec)
redis.call('ZREM', idx, ARGV[2])
local was_live = 0
if live(cur[1], now) then was_live = 1 end
return {was_live, cur[2]}
"
);

/// Remove the expired sessions among candidates taken from a bucket index.
///
/// KEYS: bucket index, then one record per candidate.
/// ARGV: now, then one member per candidate.
///
/// Returns `{removed, owner...}`: how many records were deleted and the
/// owners they were bound to. Candidates whose record is gone lose their
/// index entry; candidates that turn out live get their score repaired.
pub(crate) const PURGE: &str = lua!(
    r"
local idx = KEYS[1]
local now = tonumber(ARGV[1])
local removed = 0
local out = {0}
for i = 2, #KEYS do
  local cur = redis.call('HMGET', KEYS[i], 'expires', 'owner')
  if live(cur[1], now) then
    redis.call('ZADD', idx, ms(cur[1]), ARGV[i])
  else
    if redis.call('DEL', KEYS[i]) == 1 then
      removed = removed + 1
      if cur[2] then out[#out + 1] = cur[2] end
    end
    redis.call('ZREM', idx, ARGV[i])
  end
end
out[1] = removed
return out
"
);

/// Claim a place in an owner's index before a record names that owner: the
/// entry's score is raised to at least the record's new deadline, the index
/// key lives as long as its latest entry, and entries whose deadline passed
/// are dropped (their records are expired, so nothing can be missed).
///
/// KEYS: owner index. ARGV: now, member, expires.
pub(crate) const CLAIM: &str = lua!(
    r"
local idx = KEYS[1]
redis.call('ZREMRANGEBYSCORE', idx, '-inf', ms(ARGV[1]))
local score = redis.call('ZSCORE', idx, ARGV[2])
if not score or tonumber(score) < tonumber(ARGV[3]) then
  redis.call('ZADD', idx, ARGV[3], ARGV[2])
end
index_ttl(idx)
return 1
"
);

/// Take an owner lock, or confirm this token already holds it (a retried
/// command).
///
/// KEYS: lock. ARGV: token, ttl_ms. Returns 1 if held by `token`, else 0.
pub(crate) const LOCK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
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
