//! The Lua scripts: one per store operation, each one atomic step on the lock key and its
//! derived keys (all in one Cluster slot).
//!
//! Conventions: `KEYS[1]` is the lock key, `KEYS[2]` the state hash, `KEYS[3]` (acquire
//! only) the fence counter, `KEYS[4]` (acquire) or `KEYS[3]` (claim) the expired-holding
//! record. The lock key holds the owner, followed by a NUL and the attempt id when cadenas
//! took it (see [`super::acquire`]); every script compares owners with `owner_of`, which reads
//! the owner out of either form. The state hash outlives its lock by [`EXPIRY_GRACE_MS`] so that an expiry watcher
//! can still report who held an expired lock. A sorted set under the lock key beside its group record (`KEYS[3]`
//! of extend, metadata, force release, inspect and the clean-up of a cancelled acquire;
//! `KEYS[5]` of the take-over) is a group of readers or permit holders, which those scripts
//! handle too ([`super::group_scripts`] has its layout and its own scripts); a key of
//! another type than string under the lock key is otherwise someone else's data: every
//! script answers `-1` (with the type) and writes nothing. A ttl of `0`
//! means "never expires". Sent by `EVALSHA`; after a `SCRIPT FLUSH` or a failover to a node
//! that never saw them, redis-rs loads them again and retries (`NOSCRIPT` fallback).

use std::sync::LazyLock;

use redis::Script;

use super::acquire::FENCE_FLOOR;
use super::EXPIRY_GRACE_MS;

/// The acquire that writes the holding's record (the state hash): for a request with
/// metadata, and for every request of a store opened with `records=true`. Requests without
/// either take the native path ([`super::acquire`]).
///
/// `ARGV`: value (owner, NUL, attempt id), ttl ms (0 = none), has metadata (`0`/`1`),
/// metadata, attempt id, owner, time fences (`1`: the fence is at least the server's time
/// in microseconds, whatever the counter says — on Sentinel, where a promoted replica's
/// counter may lag behind fences its primary handed out), fence recorded later (`1`: the
/// record says fence `0`, "not known yet", until [`RECORD_FENCE`] writes the Redlock
/// lease's fence, the largest of its nodes'). Answers `{1, fence}`, `{0, holder, pttl}` or `{-1, type}`.
///
/// The common case costs five calls: `SET NX`, `INCR`, `EXISTS`, `HSET`, `PEXPIRE` (each
/// call counts: a script's cost is mostly its calls). A fence counter that is missing
/// (a key never locked, or a counter lost with the data; any counter below
/// [`FENCE_FLOOR`](super::acquire::FENCE_FLOOR)) starts at the server's time in
/// microseconds, so fences keep increasing when Redis loses its data, as long as a key is
/// locked less than once per microsecond and the server's clock does not step back. A
/// counter that is not an integer undoes the `SET` and fails: the lock is left untouched.
///
/// Numbers go to `redis.call` as strings (`ARGV` as sent, `string.format('%d')`): Redis
/// turns a Lua number into a command argument with `%.17g`, and that floating-point
/// formatting cost about 3,000 server instructions per number.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ttl = tonumber(ARGV[2])
local taken
if ttl > 0 then
  taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  taken = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if not taken then
  local t = redis.call('TYPE', KEYS[1]).ok
  if t ~= 'string' then return {-1, t} end
  return held_string(KEYS[1])
end
local fence = redis.pcall('INCR', KEYS[3])
if type(fence) == 'table' then
  redis.call('DEL', KEYS[1])
  return redis.error_reply('the fence counter ' .. KEYS[3] .. ' is not an integer')
end
if fence < FLOOR or ARGV[7] == '1' then
  local now = redis.call('TIME')
  local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if t > fence then
    fence = t
    redis.call('SET', KEYS[3], string.format('%d', fence))
  end
end
fence = string.format('%d', fence)
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- The holding before ours ended without a release (it expired, or someone deleted the
  -- key): its record goes to the expiry watcher.
  redis.call('RENAME', KEYS[2], KEYS[4])
end
local recorded = fence
if ARGV[8] == '1' then recorded = '0' end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], 'owner', ARGV[6], 'fence', recorded, 'attempt', ARGV[5], 'metadata', ARGV[4])
else
  redis.call('HSET', KEYS[2], 'owner', ARGV[6], 'fence', recorded, 'attempt', ARGV[5])
end
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], string.format('%d', ttl + GRACE)) end
return {1, fence}
"#,
    )
});

/// `KEYS[1]`: the fence counter of a key the caller has just taken with the native acquire,
/// whose `INCR` answered less than `ARGV[1]` ([`FENCE_FLOOR`](super::acquire::FENCE_FLOOR)):
/// the counter is new (the key was never locked, or the counter was lost with the data).
/// Moves it up to the server's time in microseconds and answers the holder's fence (a
/// string). Other clients' failed attempts may have counted on in between: that only
/// leaves a gap.
pub static SEED_FENCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local n = redis.pcall('INCR', KEYS[1])
if type(n) == 'table' then
  return redis.error_reply('the fence counter ' .. KEYS[1] .. ' is not an integer')
end
if n < tonumber(ARGV[1]) then
  local now = redis.call('TIME')
  local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if t > n then
    n = t
    redis.call('SET', KEYS[1], string.format('%d', n))
  end
end
return string.format('%d', n)
"#,
    )
});

/// `ARGV` and `KEYS` as [`ACQUIRE`], and `KEYS[5]` the group record, `KEYS[6]` the
/// writer-waiting marker. Always writes the record (a take-over is rare). Takes the key
/// whatever its state (a string held by anyone, a group — every holder goes, the one with
/// the lowest fence is reported displaced —, or none); a writer-waiting marker of the new
/// holder goes. Answers `{1, fence, displaced owner or nil, displaced fence or nil}` or
/// `{-1, type}`. A live holding is displaced, not expired: its state hash is deleted, so the
/// expiry watcher never reports it; a holding that had already expired (its key gone, its
/// state still there) goes to the expired-holding record as in [`ACQUIRE`]. A counter that
/// is not an integer fails before anything is written.
pub static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
local group = group_kind(t, KEYS[5])
if t ~= 'none' and t ~= 'string' and not group then return {-1, t} end
local old_owner, old_fence, value = false, false, ARGV[1]
if group then
  -- A group: its live holder with the lowest fence is the one displaced.
  local hs = group_holders(KEYS[1], KEYS[5], clock_ms())
  for i = 1, #hs, 4 do
    if hs[i + 2] and (not old_fence or tonumber(hs[i + 2]) < tonumber(old_fence)) then
      old_owner, old_fence = hs[i], hs[i + 2]
    end
  end
  redis.call('DEL', KEYS[1], KEYS[5])
  -- Its waiters wait on, for the new holding: its release announces itself.
  value = value .. '\1'
end
if redis.call('GET', KEYS[6]) == ARGV[6] then redis.call('DEL', KEYS[6]) end
if t == 'string' then
  local v = redis.call('GET', KEYS[1])
  -- Waiters marked the displaced holding: they wait on, for the new one.
  if string.find(v, '\0', 1, true) and string.byte(v, -1) == 1 then value = value .. '\1' end
  old_owner = owner_of(v)
  local s = redis.call('HMGET', KEYS[2], 'owner', 'fence')
  if s[1] == old_owner then old_fence = s[2] end
end
local fence = redis.pcall('INCR', KEYS[3])
if type(fence) == 'table' then
  return redis.error_reply('the fence counter ' .. KEYS[3] .. ' is not an integer')
end
if fence < FLOOR or ARGV[7] == '1' then
  local now = redis.call('TIME')
  local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if t > fence then
    fence = t
    redis.call('SET', KEYS[3], string.format('%d', fence))
  end
end
fence = string.format('%d', fence)
if t == 'string' then
  redis.call('DEL', KEYS[2])
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[4])
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], value)
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], 'owner', ARGV[6], 'fence', fence, 'attempt', ARGV[5], 'metadata', ARGV[4])
else
  redis.call('HSET', KEYS[2], 'owner', ARGV[6], 'fence', fence, 'attempt', ARGV[5])
end
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], string.format('%d', ttl + GRACE)) end
return {1, fence, old_owner, old_fence}
"#,
    )
});

/// `ARGV`: owner, and the release channel only when the key has a `}` but no hash tag
/// (otherwise the script names it: see [`super::keys`]). Answers `1` released, `0` not
/// ours; a key of another type fails with `WRONGTYPE`. Announces the release only when a
/// waiter marked the holding ([`MARK_WAITING`]): a release nobody waits for costs no
/// `PUBLISH`.
///
/// The owner matches when the value is the owner, or starts with the owner and a NUL
/// (`owner\0attempt`, marked or not). No `owner_of` here: this is the hot path, and each
/// part of a script counts (BENCHMARKS.md, "Redis server cost per cycle").
pub static RELEASE: LazyLock<Script> =
    LazyLock::new(|| script(&format!("{RELEASE_OWNED}{RELEASE_DELETE}")));

/// [`RELEASE`] that also sets the fence counter `KEYS[3]` to `ARGV[3]`, the released
/// holding's fence, when the holding is found: a Redlock node's release (see the Redlock
/// store's "Fencing"). `ARGV[2]`, the release channel, is always given here. Setting rather
/// than raising is enough: the holding's fence is at least the number this node gave it, and
/// no other holding of the key was granted here since (numbers used up meanwhile by failed
/// attempts were never handed out), so no fence handed out is left above the counter.
pub static RELEASE_RAISING: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        "{RELEASE_OWNED}redis.call('SET', KEYS[3], ARGV[3])\n{RELEASE_DELETE}"
    ))
});

/// The release up to the owner check: answers `0` unless `ARGV[1]` holds `KEYS[1]`.
const RELEASE_OWNED: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local n = #ARGV[1]
if string.sub(v, 1, n) ~= ARGV[1] then return 0 end
local after = string.byte(v, n + 1)
if after and after ~= 0 then return 0 end
"#;

/// The release of a holding found ours.
const RELEASE_DELETE: &str = r#"redis.call('DEL', KEYS[1], KEYS[2])
if after and string.byte(v, -1) == 1 then
  redis.call('PUBLISH', channel_of(KEYS[1], ARGV[2]), KEYS[1])
end
return 1
"#;

/// `KEYS[3]`: the group record. `ARGV`: value (owner, NUL, attempt id), and the channel as
/// in [`RELEASE`]. Releases the lock only if it is still the holding that acquire request
/// took (the clean-up of a cancelled acquire, which must never release another holding of
/// the same owner, earlier or later): the lock key's value, or, in a group, the holder
/// whose attempt id is the request's. Answers `1` released, `0` otherwise.
pub static RELEASE_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then
  local i = string.find(ARGV[1], '\0', 1, true)
  local o = string.sub(ARGV[1], 1, i - 1)
  if not group_kind(redis.call('TYPE', KEYS[1]).ok, KEYS[3]) then return 0 end
  if redis.call('HGET', KEYS[3], 'a:' .. o) ~= string.sub(ARGV[1], i + 1) then return 0 end
  if not redis.call('ZSCORE', KEYS[1], o) then return 0 end
  group_remove(KEYS[1], KEYS[3], o, clock_ms())
  redis.call('PUBLISH', channel_of(KEYS[1], ARGV[2]), KEYS[1])
  return 1
end
if v ~= ARGV[1] and v ~= ARGV[1] .. '\1' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
if v ~= ARGV[1] then redis.call('PUBLISH', channel_of(KEYS[1], ARGV[2]), KEYS[1]) end
return 1
"#,
    )
});

/// Marks the holding of `KEYS[1]` as waited for (a `\1` after its value), so that its
/// release announces itself; sent by an acquire that found the key held by cadenas (a
/// value with a NUL) and not marked yet. Values of other writers (Verrou's) are left as
/// they are: their releases announce nothing, and waiters poll. Answers the holding's
/// `PTTL` (`-2`: released meanwhile).
pub static MARK_WAITING: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then return -2 end
if string.find(v, '\0', 1, true) and string.byte(v, -1) ~= 1 then
  redis.call('SET', KEYS[1], v .. '\1', 'KEEPTTL')
end
return redis.call('PTTL', KEYS[1])
"#,
    )
});

/// `KEYS[3]`: the group record. `ARGV`: owner, ttl ms (0 = none). Answers
/// `{1, fence or nil}`, `{0}` or `{-1}`. In a group, extends the owner's live holding.
pub static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return {0} end
if t ~= 'string' then
  if not group_kind(t, KEYS[3]) then return {-1} end
  local now = clock_ms()
  if not group_live(redis.call('ZSCORE', KEYS[1], ARGV[1]), now) then return {0} end
  local ttl = tonumber(ARGV[2])
  local score = '+inf'
  if ttl > 0 then score = string.format('%d', now + ttl) end
  redis.call('ZADD', KEYS[1], 'XX', score, ARGV[1])
  group_expire(KEYS[1], KEYS[3])
  return {1, redis.call('HGET', KEYS[3], 'f:' .. ARGV[1])}
end
if owner_of(redis.call('GET', KEYS[1])) ~= ARGV[1] then return {0} end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], string.format('%d', ttl + GRACE))
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
local s = redis.call('HMGET', KEYS[2], 'owner', 'fence')
if s[1] == ARGV[1] then return {1, s[2]} end
return {1}
"#,
    )
});

/// `ARGV`: owner, fence. Writes `fence` into the holding's record (the state hash) when
/// `owner` holds the key and the record is theirs: a Redlock acquire that wrote records
/// tells every node the lease's fence, the largest of the nodes' (see the Redlock store's
/// "Fencing"). Answers `1` written, `0` not held by `owner` or no record.
#[cfg(feature = "redlock")]
pub static RECORD_FENCE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local v = redis.call('GET', KEYS[1])
if not v or owner_of(v) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'fence', ARGV[2])
return 1
"#,
    )
});

/// `KEYS[3]`: the group record. `ARGV`: owner, has metadata (`0`/`1`), metadata. Answers
/// `1`, `0` or `-1`.
pub static SET_METADATA: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
if t ~= 'string' then
  if not group_kind(t, KEYS[3]) then return -1 end
  if not group_live(redis.call('ZSCORE', KEYS[1], ARGV[1]), clock_ms()) then return 0 end
  if ARGV[2] == '1' then
    redis.call('HSET', KEYS[3], 'm:' .. ARGV[1], ARGV[3])
  else
    redis.call('HDEL', KEYS[3], 'm:' .. ARGV[1])
  end
  return 1
end
if owner_of(redis.call('GET', KEYS[1])) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'owner', ARGV[1])
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[2], 'metadata', ARGV[3])
else
  redis.call('HDEL', KEYS[2], 'metadata')
end
local p = redis.call('PTTL', KEYS[1])
if p > 0 then redis.call('PEXPIRE', KEYS[2], string.format('%d', p + GRACE)) else redis.call('PERSIST', KEYS[2]) end
return 1
"#,
    )
});

/// `KEYS[3]`: the group record. `ARGV`: channel, key. Answers `1` removed, `0` nothing
/// live there, `-1` wrong type. A group goes with every holder.
pub static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
if t ~= 'string' then
  if not group_kind(t, KEYS[3]) then return -1 end
  local live = redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', clock_ms()), '+inf')
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('PUBLISH', ARGV[1], ARGV[2])
  if live > 0 then return 1 end
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// `KEYS[3]`: the group record. No `ARGV`. Answers `{1, owner, pttl, fence or nil, metadata
/// or nil}`, `{2, kind, n, owner, pttl, fence, metadata, …}` (a group: its live holders),
/// `{0}` or `{-1, type}`. Fence and metadata count only when the state belongs to the
/// current owner (a Verrou process may hold the key without writing state).
pub static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return {0} end
if t ~= 'string' then
  local kind = group_kind(t, KEYS[3])
  if not kind then return {-1, t} end
  local hs = group_holders(KEYS[1], KEYS[3], clock_ms())
  if #hs == 0 then return {0} end
  local out = {2, kind, redis.call('HGET', KEYS[3], 'n')}
  for i = 1, #hs do out[#out + 1] = hs[i] end
  return out
end
local owner = owner_of(redis.call('GET', KEYS[1]))
local pttl = redis.call('PTTL', KEYS[1])
local s = redis.call('HMGET', KEYS[2], 'owner', 'fence', 'metadata')
if s[1] == owner then return {1, owner, pttl, s[2], s[3]} end
return {1, owner, pttl, false, false}
"#,
    )
});

/// No `ARGV`. Takes the records of holdings of `KEYS[1]` that ended without a release: the
/// state hash if it is not the current holder's, and the expired-holding record. Answers
/// `{owner, fence, metadata, …}`, one triple per record taken (none: empty). Each record is
/// deleted as it is taken, so of several watchers racing, exactly one gets it.
pub static CLAIM_EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
local s = redis.call('HMGET', KEYS[2], 'owner', 'fence', 'metadata')
if s[1] then
  local current = false
  if redis.call('TYPE', KEYS[1]).ok == 'string' then current = owner_of(redis.call('GET', KEYS[1])) end
  if current ~= s[1] then
    redis.call('DEL', KEYS[2])
    out[#out + 1] = s[1]; out[#out + 1] = s[2]; out[#out + 1] = s[3]
  end
end
local d = redis.call('HMGET', KEYS[3], 'owner', 'fence', 'metadata')
if d[1] then
  redis.call('DEL', KEYS[3])
  out[#out + 1] = d[1]; out[#out + 1] = d[2]; out[#out + 1] = d[3]
end
return out
"#,
    )
});

/// The Lua function that reads the owner out of a lock key's value: the part before the
/// first NUL (a holding cadenas took), or all of it (one a Verrou process took).
const OWNER_OF: &str = r"local function owner_of(v)
  local i = string.find(v, '\0', 1, true)
  if i then return string.sub(v, 1, i - 1) end
  return v
end
";

/// The Lua function that answers an acquire finding the lock key `k` held by a string
/// (`{0, owner, pttl}`), marking a holding of cadenas as waited for (a `\1` after its value,
/// as [`MARK_WAITING`] does) so that its release announces itself.
const HELD_STRING: &str = r"local function held_string(k)
  local v = redis.call('GET', k)
  if string.find(v, '\0', 1, true) and string.byte(v, -1) ~= 1 then
    redis.call('SET', k, v .. '\1', 'KEEPTTL')
  end
  return {0, owner_of(v), redis.call('PTTL', k)}
end
";

/// The Lua function that names a lock key's release channel as
/// [`keys::release_channel`](super::keys::release_channel) does, for the two forms that need no slot table; the third comes as `given`.
const CHANNEL_OF: &str = r"local function channel_of(k, given)
  if given then return given end
  local open = string.find(k, '{', 1, true)
  if open then
    local close = string.find(k, '}', open + 1, true)
    if close and close > open + 1 then return '__cadenas:released:' .. k end
  end
  return '__cadenas:released{' .. k .. '}'
end
";

/// A script: its text may call `owner_of`, `held_string` and `channel_of` ([`OWNER_OF`],
/// [`HELD_STRING`] and [`CHANNEL_OF`] are put in front of it as needed) and the group functions
/// ([`HELPERS`](super::group_scripts::HELPERS)) and say `GRACE` for [`EXPIRY_GRACE_MS`] and `FLOOR` for
/// [`FENCE_FLOOR`].
pub(super) fn script(text: &str) -> Script {
    let mut full = String::new();
    if text.contains("owner_of(") || text.contains("held_string(") {
        full.push_str(OWNER_OF);
    }
    if text.contains("held_string(") {
        full.push_str(HELD_STRING);
    }
    if text.contains("channel_of(") {
        full.push_str(CHANNEL_OF);
    }
    if text.contains("group_") || text.contains("clock_ms(") {
        full.push_str(super::group_scripts::HELPERS);
    }
    full.push_str(
        &text
            .replace("GRACE", &EXPIRY_GRACE_MS.to_string())
            .replace("FLOOR", &FENCE_FLOOR.to_string()),
    );
    Script::new(&full)
}
