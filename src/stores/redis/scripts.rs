//! The Lua scripts: one per store operation, each one atomic step on the lock key and its
//! derived keys (all in one Cluster slot).
//!
//! Conventions: `KEYS[1]` is the lock key, `KEYS[2]` the state hash, `KEYS[3]` (acquire
//! only) the fence counter. A key of another type than string under the lock key is someone
//! else's data: every script answers `-1` (with the type) and writes nothing. A ttl of `0`
//! means "never expires". Sent by `EVALSHA`; after a `SCRIPT FLUSH` or a failover to a node
//! that never saw them, redis-rs loads them again and retries (`NOSCRIPT` fallback).

use std::sync::LazyLock;

use redis::Script;

/// `ARGV`: owner, ttl ms (0 = none), has metadata (`0`/`1`), metadata.
/// Answers `{1, fence}`, `{0, holder, pttl}` or `{-1, type}`.
///
/// The fence is incremented before anything is written, so a fence counter that cannot be
/// incremented (not an integer) leaves the lock untouched.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'none' then
  if t ~= 'string' then return {-1, t} end
  return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
end
local ttl = tonumber(ARGV[2])
local fence = redis.call('INCR', KEYS[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
redis.call('DEL', KEYS[2])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'fence', fence, 'metadata', ARGV[4])
else
  redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'fence', fence)
end
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1, fence}
"#,
    )
});

/// `ARGV`: owner, channel, key. Answers `1` released, `0` not ours, `-1` wrong type.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
if t ~= 'string' then return -1 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#,
    )
});

/// `ARGV`: owner, ttl ms (0 = none). Answers `{1, fence or nil}`, `{0}` or `{-1}`.
pub static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return {0} end
if t ~= 'string' then return {-1} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
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

/// `ARGV`: owner, has metadata (`0`/`1`), metadata. Answers `1`, `0` or `-1`.
pub static SET_METADATA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
if t ~= 'string' then return -1 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
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
if p > 0 then redis.call('PEXPIRE', KEYS[2], p) else redis.call('PERSIST', KEYS[2]) end
return 1
"#,
    )
});

/// `ARGV`: channel, key. Answers `1` removed, `0` nothing there, `-1` wrong type.
pub static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return 0 end
if t ~= 'string' then return -1 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// No `ARGV`. Answers `{1, owner, pttl, fence or nil, metadata or nil}`, `{0}` or
/// `{-1, type}`. Fence and metadata count only when the state belongs to the current owner
/// (a Verrou process may hold the key without writing state).
pub static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return {0} end
if t ~= 'string' then return {-1, t} end
local owner = redis.call('GET', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
local s = redis.call('HMGET', KEYS[2], 'owner', 'fence', 'metadata')
if s[1] == owner then return {1, owner, pttl, s[2], s[3]} end
return {1, owner, pttl, false, false}
"#,
    )
});
