//! The Lua scripts of groups: keys held by readers or by the permit holders of a semaphore
//! (see "Groups" in the [store's docs](super)).
//!
//! A group is the lock key `K` itself, as a sorted set of owners scored by the millisecond
//! (by the server's `TIME`) at which each holder's lease ends (`+inf`: never), beside its
//! group record `G` ([`keys::group_key`](super::keys::group_key)), a hash: `kind` (`shared`
//! or `permits`), `n` (the permit count; `0` for readers), and per holder `f:OWNER` (its
//! fence), `a:OWNER` (the attempt id of the request that took it) and `m:OWNER` (its
//! metadata). `K` and `G` expire together, when the last lease ends, so a plain `SET NX`
//! finds the key free once every holder's lease is over. A sorted set under `K` without
//! its group record is someone else's data. Every script prunes the holders whose lease
//! ended (score ≤ now) before it decides.

use std::sync::LazyLock;

use redis::Script;

use super::scripts::script;

/// `KEYS`: `K`, `G`, the fence counter, the writer-waiting marker. `ARGV`: owner, attempt
/// id, ttl ms (0 = none), kind (`shared` or `permits`), permit count (`0` for readers), has
/// metadata (`0`/`1`), metadata, time fences (`1`, as [`ACQUIRE`](super::scripts::ACQUIRE)).
///
/// Answers `{1, fence, room}` (taken; `room` `1` when another holder of the kind would fit
/// now), `{0, holder, pttl}` (held: by an exclusive holder — whose holding is then marked as
/// waited for, as an exclusive acquire does —, by a live writer-waiting marker of another
/// owner for a reader, or by the group: its holder whose lease ends first), `{-2, n}` (a
/// semaphore of `n` permits holds the key) or `{-1, type}` (someone else's data). One step
/// whatever the count: `ZCARD` counts the holders.
pub static ACQUIRE_GROUP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then return held_string(KEYS[1]) end
local kind = group_kind(t, KEYS[2])
if t ~= 'none' and not kind then return {-1, t} end
local owner = ARGV[1]
if ARGV[4] == 'shared' then
  local w = redis.call('GET', KEYS[4])
  if w and w ~= owner then return {0, w, redis.call('PTTL', KEYS[4])} end
end
local now, us = clock_ms()
local count = 0
if kind then
  count = group_prune(KEYS[1], KEYS[2], now)
  if count == 0 then kind = false end
end
if kind then
  local n = redis.call('HGET', KEYS[2], 'n')
  if kind == 'permits' and ARGV[4] == 'permits' and n ~= ARGV[5] then return {-2, n} end
  if kind ~= ARGV[4] or redis.call('ZSCORE', KEYS[1], owner)
      or (kind == 'permits' and count >= tonumber(n)) then
    return group_first(KEYS[1], now)
  end
end
local fence = redis.pcall('INCR', KEYS[3])
if type(fence) == 'table' then
  return redis.error_reply('the fence counter ' .. KEYS[3] .. ' is not an integer')
end
if (fence < FLOOR or ARGV[8] == '1') and us > fence then
  fence = us
  redis.call('SET', KEYS[3], string.format('%d', fence))
end
fence = string.format('%d', fence)
local ttl = tonumber(ARGV[3])
local score = '+inf'
if ttl > 0 then score = string.format('%d', now + ttl) end
redis.call('ZADD', KEYS[1], score, owner)
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[2], 'kind', ARGV[4], 'n', ARGV[5], 'f:' .. owner, fence, 'a:' .. owner, ARGV[2], 'm:' .. owner, ARGV[7])
else
  redis.call('HSET', KEYS[2], 'kind', ARGV[4], 'n', ARGV[5], 'f:' .. owner, fence, 'a:' .. owner, ARGV[2])
end
group_expire(KEYS[1], KEYS[2])
local room = 1
if ARGV[4] == 'permits' and count + 1 >= tonumber(ARGV[5]) then room = 0 end
return {1, fence, room}
"#,
    )
});

/// An exclusive request's follow-up when its `SET NX` found the key of another type (a
/// group, or someone else's data). `KEYS`: `K`, `G`, the writer-waiting marker. `ARGV`:
/// owner, the marker's lease in ms (`0`: record none). Records (or refreshes) the owner's
/// marker unless another owner's live marker is there. Answers `{0, holder, pttl, marked}`
/// (the group's holder whose lease ends first; `marked` `1` when the marker is this
/// owner's), `{0, false, 0, 0}` (the key is free now: try again) or `{-1, type}`.
pub static GROUP_HELD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return {0, false, 0, 0} end
if t == 'string' then
  return {0, owner_of(redis.call('GET', KEYS[1])), redis.call('PTTL', KEYS[1]), 0}
end
if not group_kind(t, KEYS[2]) then return {-1, t} end
local now = clock_ms()
if group_prune(KEYS[1], KEYS[2], now) == 0 then return {0, false, 0, 0} end
local marked = 0
if ARGV[2] ~= '0' then
  local w = redis.call('GET', KEYS[3])
  if not w or w == ARGV[1] then
    redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
    marked = 1
  end
end
local held = group_first(KEYS[1], now)
held[4] = marked
return held
"#,
    )
});

/// `KEYS`: `K`, `G`. `ARGV`: owner, and the release channel as for
/// [`RELEASE`](super::scripts::RELEASE). Releases the owner's live holding in the group and
/// announces it (always: a group's release is not the plain mutex's hot path). Answers `1`
/// released, `0` not held by the owner, `-1` someone else's data.
pub static GROUP_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' or t == 'string' then return 0 end
if not group_kind(t, KEYS[2]) then return -1 end
local now = clock_ms()
if not group_live(redis.call('ZSCORE', KEYS[1], ARGV[1]), now) then
  group_prune(KEYS[1], KEYS[2], now)
  return 0
end
group_remove(KEYS[1], KEYS[2], ARGV[1], now)
redis.call('PUBLISH', channel_of(KEYS[1], ARGV[2]), KEYS[1])
return 1
"#,
    )
});

/// `KEYS[1]`: the writer-waiting marker; `ARGV[1]`: owner. Deletes the marker if it is the
/// owner's: sent by a writer that recorded one once it has taken the key. Answers `1` or `0`.
pub static UNMARK_WRITER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// The Lua functions of groups, put in front of a script that names one of them
/// (`clock_ms`, `group_…`).
pub(super) const HELPERS: &str = r#"local function clock_ms()
  local t = redis.call('TIME')
  local s, u = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(u / 1000), s * 1000000 + u
end
local function group_kind(t, g)
  if t ~= 'zset' then return false end
  return redis.call('HGET', g, 'kind')
end
local function group_live(s, now)
  return s and (s == 'inf' or tonumber(s) > now)
end
local function group_prune(k, g, now)
  local at = string.format('%d', now)
  local gone = redis.call('ZRANGEBYSCORE', k, '-inf', at)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', at)
    for _, o in ipairs(gone) do redis.call('HDEL', g, 'f:' .. o, 'a:' .. o, 'm:' .. o) end
  end
  local left = redis.call('ZCARD', k)
  if left == 0 then redis.call('DEL', k, g) end
  return left
end
local function group_expire(k, g)
  local last = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')
  if not last[2] then return end
  if last[2] == 'inf' then
    redis.call('PERSIST', k)
    redis.call('PERSIST', g)
  else
    local at = string.format('%d', tonumber(last[2]) - 1)
    redis.call('PEXPIREAT', k, at)
    redis.call('PEXPIREAT', g, at)
  end
end
local function group_first(k, now)
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if first[2] == 'inf' then return {0, first[1], -1} end
  return {0, first[1], math.max(tonumber(first[2]) - now, 0)}
end
local function group_remove(k, g, o, now)
  redis.call('ZREM', k, o)
  redis.call('HDEL', g, 'f:' .. o, 'a:' .. o, 'm:' .. o)
  if group_prune(k, g, now) > 0 then group_expire(k, g) end
end
local function group_holders(k, g, now)
  local hs = redis.call('ZRANGEBYSCORE', k, '(' .. string.format('%d', now), '+inf', 'WITHSCORES')
  local out = {}
  for i = 1, #hs, 2 do
    local o, s = hs[i], hs[i + 1]
    local pttl = -1
    if s ~= 'inf' then pttl = tonumber(s) - now end
    local f = redis.call('HMGET', g, 'f:' .. o, 'm:' .. o)
    out[#out + 1] = o; out[#out + 1] = pttl; out[#out + 1] = f[1]; out[#out + 1] = f[2]
  end
  return out
end
"#;
