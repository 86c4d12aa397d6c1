"""The Lua scripts that keep a limiter's state inside Redis.

Each decision is one script: Redis runs it atomically, so the read-modify-write of the state
needs no lock and no retry loop, and a decision costs one round trip. Every script reads the
server's clock (``TIME``), never a client's: hosts whose clocks disagree still share one budget.
Times inside Redis are microseconds since the epoch as Lua numbers (doubles: exact to a fraction
of a microsecond at today's dates, where nanoseconds would not fit 53 bits).

All the keys of one limiter share a hash tag (``omnilimit:{NAME}:...``), so a Redis Cluster keeps
them in one slot and a script may touch them together. Each key gets an idle expiry (ARGV
``ttl_s``) when it is created and again at the first write of every second (not at every write:
each command costs server time on the hot path): a limiter nobody uses leaves nothing behind.

The token bucket is the GCRA of ``cpp/include/omnilimit/gcra.hpp``: the state is the theoretical
arrival time ``tat`` of the next request; a request of cost c books ``tat + c * interval`` and may
go at ``new_tat - burst * interval``. A booking in the future is returned as a wait: the caller
sleeps exactly that long (reserve, then sleep: nobody polls), and callers are served in the order
their bookings reached Redis. A booking whose wait exceeds the caller's ``max_wait`` is not made:
the caller stands by, and the scripts that may bring its turn closer (a refund, a new
configuration) publish on the limiter's ``changed`` channel, which wakes the callers standing by
on every host.
"""

from __future__ import annotations

# Shared prologue: `now` (µs, the server's clock), `second`, and a writer of exact doubles (Lua's
# tostring keeps 14 digits, too few for microseconds since the epoch).
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local second = tonumber(t[1])
local function exact(x) return string.format('%.17g', x) end
"""

# A window of counts per second (`key`: a hash, second -> count), for the "last 60 s" figures.
# Its housekeeping (expiry, trimming to 62 seconds) runs at the first count of each second.
_WINDOW = """
local function count_in_window(key, at, n)
  local field = math.floor(at / 1000000)
  if redis.call('HINCRBY', key, field, n) == n then
    redis.call('EXPIRE', key, 120)
    if redis.call('HLEN', key) > 62 then
      for _, f in ipairs(redis.call('HKEYS', key)) do
        if tonumber(f) < field - 61 then redis.call('HDEL', key, f) end
      end
    end
  end
end
local function window_count(key)
  local total = 0
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local at = tonumber(flat[i])
    if at > second - 60 and at <= second then total = total + tonumber(flat[i + 1]) end
  end
  return total
end
"""

# The rate limiter. KEYS: 1 the bucket hash {tat, interval, burst, admitted, refused, sec},
# 2 the window of admissions (by the second of their instant). ARGV: 1 interval_us, 2 burst,
# 3 ttl_s (the configuration in ARGV only seeds a bucket that does not exist yet, or expired:
# the stored one wins).
_RATE_STATE = """
local s = redis.call('HMGET', KEYS[1], 'tat', 'interval', 'burst', 'sec', 'cfg')
local interval = tonumber(s[2]) or tonumber(ARGV[1])
local burst = tonumber(s[3]) or tonumber(ARGV[2])
local tat = tonumber(s[1]) or now
if tat < now then tat = now end
local ttl = tonumber(ARGV[3])
-- Writes the bucket: with the configuration when it had none, with the expiry once a second.
local function save(new_tat)
  if not s[2] then
    redis.call('HSET', KEYS[1], 'tat', exact(new_tat), 'interval', exact(interval), 'burst', burst, 'sec', second,
               'cfg', exact(now))
    s[5] = exact(now)
    redis.call('EXPIRE', KEYS[1], ttl)
  elseif tonumber(s[4]) ~= second then
    redis.call('HSET', KEYS[1], 'tat', exact(new_tat), 'sec', second)
    redis.call('EXPIRE', KEYS[1], ttl)
  else
    redis.call('HSET', KEYS[1], 'tat', exact(new_tat))
  end
end
"""

# ARGV 4: cost, 5: max_wait_us (< 0: no limit), 6: '1' to count a refusal ('0' for a caller that
# stands by and will look again: it is counted once, at its last look).
# Returns {1, wait_us, go_at_us, cfg} (booked: go in wait_us; cfg: the configuration's count, see
# RATE_CONFIGURE) or {0, wait_us} (the wait a booking would have had exceeds max_wait_us: nothing
# booked).
RATE_ACQUIRE = (
    _NOW
    + _RATE_STATE
    + _WINDOW
    + """
local new_tat = tat + interval * tonumber(ARGV[4])
local go_at = new_tat - burst * interval
if go_at < now then go_at = now end
local wait = go_at - now
local max_wait = tonumber(ARGV[5])
if wait ~= wait or new_tat ~= new_tat or new_tat == math.huge then  -- not a number: fail closed
  return {0, 9007199254740992}
end
if max_wait >= 0 and wait > max_wait then
  if ARGV[6] == '1' then
    redis.call('HINCRBY', KEYS[1], 'refused', 1)  -- a refusal implies a bucket, which has its expiry
  end
  return {0, math.ceil(wait)}
end
save(new_tat)
redis.call('HINCRBY', KEYS[1], 'admitted', 1)
count_in_window(KEYS[2], go_at, 1)
return {1, math.ceil(wait), exact(go_at), s[5] or '0'}
"""
)

# A booking given back before its instant (a caller interrupted while it slept, or a new rate):
# the bucket moves back by its cost, never before now, and the callers standing by hear of it.
# ARGV 4: cost, 5: go_at_us, 6: the `changed` channel, 7: 'refund', or 'void' for an instant that
# came inside a pause and was not used (it is uncounted; the bucket does not move).
# Returns 1 if refunded (or uncounted), 0 if its instant had already come (it was used).
RATE_REFUND = (
    _NOW
    + _RATE_STATE
    + _WINDOW
    + """
local go_at = tonumber(ARGV[5])
if not s[1] then return 0 end
if ARGV[7] == 'void' then
  redis.call('HINCRBY', KEYS[1], 'admitted', -1)
  count_in_window(KEYS[2], go_at, -1)
  return 1
end
if go_at <= now then return 0 end
local back = tat - interval * tonumber(ARGV[4])
if back < now then back = now end
save(back)
redis.call('HINCRBY', KEYS[1], 'admitted', -1)
count_in_window(KEYS[2], go_at, -1)
redis.call('PUBLISH', ARGV[6], 'refund')
return 1
"""
)

# Sets the configuration every host follows (the latest wins), keeping what is owed converted to
# the new pace: every instant still to come, at `now` + d, moves to `now` + d * ratio (the new
# interval over the old). The bucket's `cfg` counts these moves (it starts at the bucket's birth
# in µs, so a bucket made again after its expiry counts above the one before), and each booking
# says which `cfg` it was made under: a caller asleep on an instant follows every move made since.
# A change is published on the `changed` channel (ARGV 4): 'configure CFG NOW RATIO'. Returns
# {previous interval_us, previous burst} as strings ('' when the bucket did not exist), then
# {cfg, now, ratio} of the move ('' when the pace did not change).
RATE_CONFIGURE = (
    _NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'tat', 'interval', 'burst', 'cfg')
local new_interval, new_burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(s[1]) or now
local old_interval = tonumber(s[2])
local cfg = tonumber(s[4]) or now
local ratio = 1
if old_interval and old_interval ~= new_interval then
  ratio = new_interval / old_interval
  cfg = cfg + 1
end
if tat > now then tat = now + (tat - now) * ratio end
if tat < now then tat = now end
redis.call('HSET', KEYS[1], 'tat', exact(tat), 'interval', exact(new_interval), 'burst', new_burst, 'sec', second,
           'cfg', exact(cfg))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local moved = {'', '', ''}
if ratio ~= 1 then moved = {exact(cfg), exact(now), exact(ratio)} end
if s[2] and (ratio ~= 1 or tonumber(s[3]) ~= new_burst) then
  redis.call('PUBLISH', ARGV[4], 'configure ' .. table.concat(moved, ' '))
end
return {s[2] or '', s[3] or '', moved[1], moved[2], moved[3]}
"""
)

# Holds the bucket back for every host. ARGV 4: mode, 5: value.
# mode 'pause': nobody goes for value µs (a provider's 429), and then at the paced rate. The pause
# is published on the `changed` channel (ARGV 6) as 'pause VALUE ORIGIN' (ARGV 7, the pauser's id):
# the callers every host has already booked inside it give their instants up and book again.
# mode 'cap': at most value requests are available now (a provider's remaining budget).
# Returns the µs until the next request may go.
RATE_HOLD = (
    _NOW
    + _RATE_STATE
    + """
local value = tonumber(ARGV[5])
local floor
if ARGV[4] == 'pause' then
  floor = now + value + (burst - 1) * interval
  redis.call('PUBLISH', ARGV[6], 'pause ' .. ARGV[5] .. ' ' .. ARGV[7])
else
  if value > burst then value = burst end
  floor = now + (burst - value) * interval
end
if floor > tat then tat = floor end
save(tat)
local go_at = tat + interval - burst * interval
if go_at < now then go_at = now end
return math.ceil(go_at - now)
"""
)

# What every host's stats read (nothing is written).
# Returns {tokens available now, interval_us, burst, admitted, refused, admissions in the last
# 60 s, µs until a request arriving now would go}.
RATE_STATS = (
    _NOW
    + _RATE_STATE
    + _WINDOW
    + """
local available = math.floor((now + burst * interval - tat) / interval)
if available > burst then available = burst end
if available < 0 then available = 0 end
local wait = tat + interval - burst * interval - now
if wait < 0 then wait = 0 end
local c = redis.call('HMGET', KEYS[1], 'admitted', 'refused')
return {available, exact(interval), burst, tonumber(c[1]) or 0, tonumber(c[2]) or 0, window_count(KEYS[2]),
        math.ceil(wait)}
"""
)

# The concurrency limiter: leased permits, and a line of waiters.
# KEYS: 1 leases (sorted set: owner id -> expiry µs), 2 config and counters hash {max, sec, ticket,
# admitted, refused, released, expired}, 3 window hash (releases per second), 4 the line (sorted
# set: waiter id -> ticket), 5 the line's heartbeats (sorted set: waiter id -> expiry µs).
# ARGV (every script): 1 lease_us, 2 max (seeds a missing config), 3 ttl_s, 4 owner id,
# 5 channel, 6 heartbeat_us; some scripts take more.
#
# A lease past its expiry belongs to a client that died (or stalled past its lease): it is removed
# before any decision, and its permit is free again. A waiter in the line whose heartbeat expired
# stopped looking (its process died): it leaves the line. The first `free` waiters of the line may
# take a permit, and nobody else: a newcomer goes only when the line is shorter than the permits
# free, so permits go in arrival order across every host. Whenever permits may have come free,
# `announce` publishes the ids of the waiters now allowed to go, and their processes wake exactly
# them.
_LEASES = """
local ttl = tonumber(ARGV[3])
local st = redis.call('HMGET', KEYS[2], 'max', 'sec')
local max = tonumber(st[1]) or tonumber(ARGV[2])
-- The idle expiry of every key, refreshed at the first write of each second.
local function touch()
  if tonumber(st[2]) ~= second then
    st[2] = second
    redis.call('HSET', KEYS[2], 'sec', second)
    for i = 1, 5 do redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
-- The expiry of a sorted set this call creates (a touch earlier in the second did not see it).
local function created(key) redis.call('EXPIRE', key, ttl) end
local function held() return redis.call('ZCARD', KEYS[1]) end
local function announce()
  local n = max - held()
  if n <= 0 then return end
  local heads = redis.call('ZRANGE', KEYS[4], 0, n - 1)
  if #heads > 0 then redis.call('PUBLISH', ARGV[5], table.concat(heads, ' ')) end
end
local function leave(owner)
  redis.call('ZREM', KEYS[5], owner)
  return redis.call('ZREM', KEYS[4], owner)
end
-- Takes back expired leases and drops waiters that stopped looking (looked for only when the line
-- has `line` > 0 waiters); true if anything changed.
local function purge(line)
  local changed = false
  local gone = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if gone > 0 then
    redis.call('HINCRBY', KEYS[2], 'expired', gone)
    changed = true
  end
  if line > 0 then
    local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 100)
    for _, owner in ipairs(dead) do leave(owner) end
    if #dead > 0 then changed = true end
  end
  return changed
end
"""

# ARGV 7: 'wait' (join the line, or stay in it, when no permit is free for this caller) or 'try'.
# Returns {1, 0} (leased) or {0, µs until the earliest lease expires, or -1 if none}.
SEM_ACQUIRE = (
    _NOW
    + _LEASES
    + """
local owner = ARGV[4]
local line = redis.call('ZCARD', KEYS[4])
local changed = purge(line)
if changed and line > 0 then line = redis.call('ZCARD', KEYS[4]) end
local rank = nil
if line > 0 then rank = redis.call('ZRANK', KEYS[4], owner) end
local ahead = rank or line
local count = held()
if ahead < max - count then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), owner)
  if count == 0 then created(KEYS[1]) end
  if rank then leave(owner) end
  redis.call('HINCRBY', KEYS[2], 'admitted', 1)
  touch()
  if changed then announce() end
  return {1, 0}
end
if ARGV[7] == 'wait' then
  if not rank then redis.call('ZADD', KEYS[4], redis.call('HINCRBY', KEYS[2], 'ticket', 1), owner) end
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), owner)
  if line == 0 then
    created(KEYS[4])
    created(KEYS[5])
  end
  touch()
end
if changed then announce() end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then return {0, math.ceil(tonumber(first[2]) - now)} end
return {0, -1}
"""
)

# Returns 1 if the owner's lease was released, 0 if it held none (its lease had expired and was
# taken back).
SEM_RELEASE = (
    _NOW
    + _LEASES
    + _WINDOW
    + """
if redis.call('ZREM', KEYS[1], ARGV[4]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], 'released', 1)
count_in_window(KEYS[3], now, 1)
touch()
announce()
return 1
"""
)

# A waiter leaves the line (it timed out, was cancelled, or its limiter closed). ARGV 7: 1 to
# count it as refused. Returns 1 if it was in the line.
SEM_LEAVE = (
    _NOW
    + _LEASES
    + """
local was = leave(ARGV[4])
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[2], 'refused', 1) end
touch()
if was == 1 then announce() end
return was
"""
)

# Extends the leases of the owners in ARGV[7..] by lease_us from now. A lease that is missing (a
# Redis restarted without persistence, or one taken back while its client stalled) is put back:
# the call it stands for is still running. Returns how many were missing.
SEM_RENEW = (
    _NOW
    + _LEASES
    + """
local until_us = now + tonumber(ARGV[1])
local missing = 0
for i = 7, #ARGV do
  missing = missing + redis.call('ZADD', KEYS[1], until_us, ARGV[i])
end
if missing > 0 then created(KEYS[1]) end
touch()
return missing
"""
)

# Sets the cap every host follows (the latest wins); a raised cap lets the next waiters go.
# Returns the previous cap ('' when none was stored).
SEM_CONFIGURE = (
    _NOW
    + _LEASES
    + """
redis.call('HSET', KEYS[2], 'max', ARGV[2])
max = tonumber(ARGV[2])
touch()
redis.call('EXPIRE', KEYS[2], ttl)
announce()
return st[1] or ''
"""
)

# Returns {leases held now, max, admitted, refused, releases in the last 60 s, leases that
# expired, waiters in the line}.
SEM_STATS = (
    _NOW
    + _LEASES
    + _WINDOW
    + """
if purge(redis.call('ZCARD', KEYS[4])) then announce() end
local c = redis.call('HMGET', KEYS[2], 'admitted', 'refused', 'expired')
return {held(), max, tonumber(c[1]) or 0, tonumber(c[2]) or 0, window_count(KEYS[3]), tonumber(c[3]) or 0,
        redis.call('ZCARD', KEYS[4])}
"""
)
