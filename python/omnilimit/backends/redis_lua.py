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
if ratio ~= 1 then
  moved = {exact(cfg), exact(now), exact(ratio)}
  redis.call('HSET', KEYS[1], 'move', table.concat(moved, ' '))  -- for a process subscribing late (RATE_LATEST)
end
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
  local ends = tonumber(redis.call('HGET', KEYS[1], 'pause_end')) or 0
  if now + value > ends then redis.call('HSET', KEYS[1], 'pause_end', exact(now + value)) end
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

# What a process that subscribes to the `changed` channel late may have missed: {µs left of the
# latest pause (<= 0: none), the latest move of a new rate as 'CFG NOW RATIO' ('' if none)}.
RATE_LATEST = (
    _NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'pause_end', 'move')
return {math.ceil((tonumber(s[1]) or 0) - now), s[2] or ''}
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
local st = redis.call('HMGET', KEYS[2], 'max', 'sec', 'pause_end')
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
# Returns {1, 0} (leased), {1, 0, µs} (leased while a pause declared by any host runs for µs more:
# the caller waits it out) or {0, µs until the earliest lease expires, or -1 if none}.
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
  local paused = (tonumber(st[3]) or 0) - now
  if paused > 0 then return {1, 0, paused} end
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

# A provider's 429, for every host: nobody goes for ARGV 7 µs (a pause in effect that ends later
# stays). Every acquire that leases a permit meanwhile is told the µs left. Returns the µs until
# the pause in effect ends.
SEM_PAUSE = (
    _NOW
    + _LEASES
    + """
local wanted = now + tonumber(ARGV[7])
local was = tonumber(st[3]) or 0
if wanted > was then redis.call('HSET', KEYS[2], 'pause_end', wanted) end
touch()
return math.max(wanted, was) - now
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

# ---- A rate limiter with a token budget: a request and N tokens together, callers in a line ----
#
# Two GCRAs in the rate limiter's bucket hash (KEYS 1): the requests' (`tat`, `interval`,
# `burst`, shared with a plain rate limiter of the same name) and the tokens' (`ttat`,
# `tinterval`, `tburst`). A caller takes one request and its N tokens at one instant, or nothing.
# Nothing is booked ahead: callers that must wait stand in a line (KEYS 3, a sorted set: waiter
# id -> ticket) with their claims (KEYS 5, a hash: id -> tokens; `queued` in KEYS 1 is their
# sum), and only the head of the line may take, when both budgets allow it. So tokens given back
# by a finished call (a settle), a provider's cap or a new limit re-plan the line at once: each
# of them announces the head, which looks again. A newcomer goes straight away only when the line
# is empty; else it learns its planned instant (after every claim ahead of it) and joins the
# line if that instant comes by its deadline. A waiter looks at least every second (a heartbeat,
# KEYS 4: id -> expiry): one whose process died leaves the line when its heartbeat expires.
# KEYS: 1 bucket, 2 window of admissions, 3 line, 4 heartbeats, 5 claims, 6 window of tokens.
# ARGV (every script): 1 interval_us, 2 burst, 3 ttl_s, 4 token interval_us, 5 token burst
# (the configuration seeds a bucket that has none; the stored one wins), 6 the channel.
_TOKENS = """
local s = redis.call('HMGET', KEYS[1], 'tat', 'interval', 'burst', 'sec', 'cfg', 'ttat', 'tinterval', 'tburst',
                     'queued')
local interval = tonumber(s[2]) or tonumber(ARGV[1])
local burst = tonumber(s[3]) or tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local tinterval = tonumber(s[7]) or tonumber(ARGV[4])
local tburst = tonumber(s[8]) or tonumber(ARGV[5])
local queued = tonumber(s[9]) or 0
local tat = tonumber(s[1]) or now
if tat < now then tat = now end
local ttat = tonumber(s[6]) or now
if ttat < now then ttat = now end
-- Writes both buckets (and the configuration they had none of), the expiries once a second.
local function save()
  redis.call('HSET', KEYS[1], 'tat', exact(tat), 'ttat', exact(ttat), 'queued', queued)
  if not s[2] then redis.call('HSET', KEYS[1], 'interval', exact(interval), 'burst', burst, 'cfg', exact(now)) end
  if not s[7] then redis.call('HSET', KEYS[1], 'tinterval', exact(tinterval), 'tburst', tburst) end
  if tonumber(s[4]) ~= second then
    redis.call('HSET', KEYS[1], 'sec', second)
    for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ttl) end
  end
end
local function head() return redis.call('ZRANGE', KEYS[3], 0, 0)[1] end
-- Tells the head of the line to look again ('go ID'), or the callers standing by ('changed').
local function announce()
  local h = head()
  redis.call('PUBLISH', ARGV[6], h and ('go ' .. h) or 'changed')
end
local function leave(owner)
  redis.call('ZREM', KEYS[4], owner)
  if redis.call('ZREM', KEYS[3], owner) == 0 then return false end
  queued = queued - (tonumber(redis.call('HGET', KEYS[5], owner)) or 0)
  redis.call('HDEL', KEYS[5], owner, 's:' .. owner)
  return true
end
-- Waiters whose heartbeat expired leave the line; true if any did.
local function purge()
  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  for _, owner in ipairs(dead) do leave(owner) end
  if redis.call('ZCARD', KEYS[3]) == 0 then queued = 0 end
  return #dead > 0
end
-- The tokens claimed ahead of `owner` (claiming n) in the line, in O(1): each waiter notes at
-- its arrival the tokens ever claimed before it (`s:ID`, from the bucket's `claimed`), so the
-- claims between the head and it are the difference of the two notes. A waiter that left from
-- the middle is still counted there (never more than all the other claims in the line): the plan
-- of a waiter behind the head errs late, never early, and only the head takes.
local function claimed_ahead(owner, n)
  local h = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  local notes = redis.call('HMGET', KEYS[5], 's:' .. owner, 's:' .. h)
  local between = (tonumber(notes[1]) or 0) - (tonumber(notes[2]) or 0)
  return math.max(0, math.min(between, queued - n))
end
-- The instant a caller with `count` callers and `tokens` tokens ahead of it, claiming n, is
-- admitted. A claim above the token burst is admitted when the bucket is full and goes into debt:
-- its caller then waits out the debt (see TOKEN_TAKE), and the callers behind it wait for it.
local function planned(count, tokens, n)
  local go = tat + (count + 1) * interval - burst * interval
  local by_tokens = ttat + (tokens + math.min(n, tburst)) * tinterval - tburst * tinterval
  if by_tokens > go then go = by_tokens end
  return go
end
"""

# Takes a request and ARGV 8 tokens for the waiter ARGV 7. ARGV 9: max_wait_us (< 0: no limit),
# 10: '1' to count a refusal, 11: '1' to wait in the line (else: take now or nothing),
# 12: heartbeat_us, 13: lead_us (the head takes a turn that comes within it, and sleeps until it),
# 14: late_us (a turn looked at up to this late, or one request interval, is taken at its instant).
# Returns {1, wait_us} (taken: go in wait_us, the lead, or the debt of a claim above the token
# burst: (N - burst) token intervals from a full bucket), {0, wait_us} (its turn
# would come after max_wait_us, or it may not wait: nothing taken, not in the line), {2, wait_us}
# (the head of the line: its turn comes in wait_us) or {3, wait_us} (behind others in the line,
# planned in wait_us: it waits to be announced).
TOKEN_TAKE = (
    _NOW
    + _WINDOW
    + _TOKENS
    + """
local owner, n = ARGV[7], tonumber(ARGV[8])
-- A look up to `late` µs after its turn (a wake-up, a round trip) still takes it at its instant:
-- the buckets are floored at now - late here, not at now, so such lateness is not lost. `late` is
-- the in-process queue's tolerance: ARGV 14 or one request interval, whichever is longer.
local late = math.max(tonumber(ARGV[14]), interval)
tat = math.max(tonumber(s[1]) or now, now - late)
ttat = math.max(tonumber(s[6]) or now, now - late)
local changed = purge()
local rank = redis.call('ZRANK', KEYS[3], owner)
local count, tokens
if rank == 0 then
  count, tokens = 0, 0
elseif rank then
  count, tokens = rank, claimed_ahead(owner, n)
else
  count, tokens = redis.call('ZCARD', KEYS[3]), queued
end
local go = planned(count, tokens, n)
if count == 0 and go <= now + tonumber(ARGV[13]) then
  -- The head takes its turn at `go`, booked now when it is that close: the buckets move from their
  -- own instants, so a look that comes a little late (a wake-up, a round trip) loses no time.
  tat = math.max(tat, go - (burst - 1) * interval) + interval
  ttat = ttat + n * tinterval
  if rank then leave(owner) end
  save()
  redis.call('HINCRBY', KEYS[1], 'admitted', 1)
  redis.call('HINCRBY', KEYS[1], 'tokens', n)
  count_in_window(KEYS[2], now, 1)
  count_in_window(KEYS[6], now, n)
  if rank or changed then announce() end
  local at = math.max(go, ttat - tburst * tinterval, now)
  return {1, math.ceil(at - now)}
end
local wait = math.max(go - now, 0)
local max_wait = tonumber(ARGV[9])
if ARGV[11] ~= '1' or (max_wait >= 0 and wait > max_wait) then
  local was = rank and leave(owner)
  if ARGV[10] == '1' then redis.call('HINCRBY', KEYS[1], 'refused', 1) end
  if was or changed then
    save()
    announce()
  end
  return {0, math.ceil(wait)}
end
if not rank then
  redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'ticket', 1), owner)
  redis.call('HSET', KEYS[5], owner, n, 's:' .. owner, redis.call('HINCRBY', KEYS[1], 'claimed', n) - n)
  queued = queued + n
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
end
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[12]), owner)
redis.call('EXPIRE', KEYS[4], ttl)
save()
if changed then announce() end
if count == 0 then return {2, math.ceil(wait)} end
return {3, math.ceil(wait)}
"""
)

# The waiter ARGV 7 leaves the line (it timed out, was cancelled, or its limiter closed); ARGV 8
# '1' counts a refusal. Returns 1 if it was in the line.
TOKEN_LEAVE = (
    _NOW
    + _WINDOW
    + _TOKENS
    + """
local was = leave(ARGV[7])
if ARGV[8] == '1' then redis.call('HINCRBY', KEYS[1], 'refused', 1) end
if was then
  save()
  announce()
end
return was and 1 or 0
"""
)

# A finished call used ARGV 7 tokens more than it reserved (less: negative): the token bucket is
# charged, or given back up to a full bucket, and the head of the line looks again.
TOKEN_SETTLE = (
    _NOW
    + _WINDOW
    + _TOKENS
    + """
local diff = tonumber(ARGV[7])
ttat = ttat + diff * tinterval
if ttat < now then ttat = now end
save()
redis.call('HINCRBY', KEYS[1], 'tokens', diff)
count_in_window(KEYS[6], now, diff)
announce()
return 1
"""
)

# Holds a budget back for every host. ARGV 7: mode, 8: value, 9: the caller's id (for a pause).
# 'pause': no request for value µs (a provider's 429), published as 'pause VALUE ORIGIN' as the
# plain rate limiter does; 'requests' / 'tokens': at most value requests / tokens available now.
# Returns the µs until a request (with no tokens) may go.
TOKEN_HOLD = (
    _NOW
    + _WINDOW
    + _TOKENS
    + """
local mode, value = ARGV[7], tonumber(ARGV[8])
if mode == 'pause' then
  local floor = now + value + (burst - 1) * interval
  if floor > tat then tat = floor end
  redis.call('PUBLISH', ARGV[6], 'pause ' .. ARGV[8] .. ' ' .. ARGV[9])
  local ends = tonumber(redis.call('HGET', KEYS[1], 'pause_end')) or 0
  if now + value > ends then redis.call('HSET', KEYS[1], 'pause_end', exact(now + value)) end
elseif mode == 'requests' then
  if value > burst then value = burst end
  local floor = now + (burst - value) * interval
  if floor > tat then tat = floor end
else
  if value > tburst then value = tburst end
  local floor = now + (tburst - value) * tinterval
  if floor > ttat then ttat = floor end
end
save()
announce()
return math.ceil(math.max(planned(0, 0, 0) - now, 0))
"""
)

# Sets the configuration of both budgets (ARGV 1, 2, 4, 5) for every host, keeping what is owed
# in each converted to its new pace; a new request interval is published as RATE_CONFIGURE does
# (the plain rate limiters' sleepers move), and the head of the line looks again. Returns the
# previous {interval_us, burst, token interval_us, token burst} as strings ('' where none).
TOKEN_CONFIGURE = (
    _NOW
    + _WINDOW
    + _TOKENS
    + """
local before = {s[2] or '', s[3] or '', s[7] or '', s[8] or ''}
local new_interval, new_burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local new_tinterval, new_tburst = tonumber(ARGV[4]), tonumber(ARGV[5])
local old_interval, old_tinterval = tonumber(s[2]), tonumber(s[7])
local cfg = tonumber(s[5]) or now
if old_interval and old_interval ~= new_interval then
  local ratio = new_interval / old_interval
  tat = now + (tat - now) * ratio
  cfg = cfg + 1
  local move = exact(cfg) .. ' ' .. exact(now) .. ' ' .. exact(ratio)
  redis.call('HSET', KEYS[1], 'move', move)
  redis.call('PUBLISH', ARGV[6], 'configure ' .. move)
end
if old_tinterval and old_tinterval ~= new_tinterval then ttat = now + (ttat - now) * new_tinterval / old_tinterval end
interval, burst, tinterval, tburst = new_interval, new_burst, new_tinterval, new_tburst
redis.call('HSET', KEYS[1], 'interval', exact(interval), 'burst', burst, 'tinterval', exact(tinterval),
           'tburst', tburst, 'cfg', exact(cfg))
s[2], s[7] = 'set', 'set'
save()
announce()
return before
"""
)

# What every host's stats read (nothing is written). Returns {requests available now,
# interval_us, burst, admitted, refused, admissions in the last 60 s, µs the request bucket is
# ahead of now, tokens available now, token interval_us, token burst, tokens charged in the last
# 60 s, waiters in the line, tokens they claim, µs the token bucket is ahead of now, tokens
# charged in all}.
TOKEN_STATS = (
    _NOW
    + _WINDOW
    + _TOKENS
    + """
local function available(at, every, most)
  local n = math.floor((now + most * every - at) / every)
  if n > most then n = most end
  if n < 0 then n = 0 end
  return n
end
local c = redis.call('HMGET', KEYS[1], 'admitted', 'refused', 'tokens')
return {available(tat, interval, burst), exact(interval), burst, tonumber(c[1]) or 0, tonumber(c[2]) or 0,
        window_count(KEYS[2]), math.ceil(tat - now), available(ttat, tinterval, tburst), exact(tinterval), tburst,
        window_count(KEYS[6]), redis.call('ZCARD', KEYS[3]), queued, math.ceil(ttat - now), tonumber(c[3]) or 0}
"""
)

# One process's waiters in the line (ids from ARGV 8) renew their heartbeats, by ARGV 7 µs, in one
# round trip a second for all of them; waiters of any process whose heartbeat expired leave the
# line first (and the head is announced). A waiter no longer in the line (it left, or was
# dropped) is not put back. Returns how many were renewed.
TOKEN_BEAT = (
    _NOW
    + _WINDOW
    + _TOKENS
    + """
if purge() then  -- a waiter whose process died or stopped: the line moves on without it
  save()
  announce()
end
local until_us = now + tonumber(ARGV[7])
local renewed = 0
for i = 8, #ARGV do
  if redis.call('ZSCORE', KEYS[4], ARGV[i]) then
    redis.call('ZADD', KEYS[4], until_us, ARGV[i])
    renewed = renewed + 1
  end
end
return renewed
"""
)

# ---- lease mode: each process decides locally on a share of the budget -------------------------
#
# KEYS 1: the leases (a hash, process -> "share expiry_us wants used"), KEYS 2: the state (a hash:
# ``pause_end``). A process renews its lease with what it wants (requests per minute) and used;
# the script drops the leases that ran out, then grants it its proportional share of the capacity
# among the live leases: what it wants, if that is at most an equal share; else the equal share
# plus the part of what the others leave unused in proportion to what it wants beyond it. At most
# twice its share before (or the equal share), and never more than the capacity the other live
# leases leave free, so the live leases never sum above the capacity: a process whose share
# shrinks gives it up when it renews, and only then may another be granted it.

# Renews ARGV 2's lease. ARGV 1: the capacity (requests per minute), 3: what it wants, 4: what it
# used (both per minute), 5: the lease (µs), 6: the keys' idle TTL (s); 7, 8, 9: the same three for
# tokens per minute (ARGV 7 = 0: no token budget). A lease is "expiry share wants used tshare
# twants tused". Returns {the share (a string), the live leases, the µs left of the pause in effect
# (0: none), what the live leases used (a string), the token share, the tokens they used}.
LEASE_GRANT = (
    _NOW
    + """
local me = ARGV[2]
local function grant(capacity, wants, had, others, whole)
  local n = #others + 1
  local equal = capacity / n
  local unused, beyond, others_have = 0, 0, 0
  local function weigh(w)
    if w < equal then unused = unused + (equal - w) else beyond = beyond + (w - equal) end
  end
  weigh(wants)
  for _, other in ipairs(others) do
    others_have = others_have + other[1]
    weigh(math.min(other[2], capacity))
  end
  local function proportional(w)
    if w <= equal then return w end
    if beyond > 0 then return equal + unused * (w - equal) / beyond end
    return equal
  end
  local free = capacity - others_have
  if not whole or capacity / 60 < n then
    -- A share grows to at most twice what it was (or the equal share): a process that renews
    -- first does not take what the others, which have not reported their demand yet, will want.
    return math.max(0, math.min(proportional(wants), math.max(2 * had, equal), free))
  end
  -- Whole requests a second, when there are enough for every process: a bucket at r a second
  -- (burst 1) admits at most r in any second, so the shares' sum bounds every 1-s window, not
  -- only the average. Each process gets the whole part of its proportional share; the seconds'
  -- remainder goes, one each, to the processes short of their share (wanting at least an equal
  -- share) with the largest fractional parts (ties: by id), the same on every renewal. An idle
  -- process gets the whole part of what it wants: often none, and its first caller then waits for
  -- a renewal.
  local mine = proportional(wants) / 60
  local given, ahead = math.floor(mine + 1e-9), 0
  local taken = given
  for _, other in ipairs(others) do
    local their_wants = math.min(other[2], capacity)
    local theirs = proportional(their_wants) / 60
    taken = taken + math.floor(theirs + 1e-9)
    local a, b = theirs - math.floor(theirs + 1e-9), mine - given
    if their_wants >= equal and (a > b + 1e-9 or (math.abs(a - b) <= 1e-9 and other[3] < me)) then
      ahead = ahead + 1
    end
  end
  local remainder = math.floor(capacity / 60 + 1e-9) - taken
  if wants >= equal and mine - given > 1e-9 and ahead < remainder then given = given + 1 end
  local most = math.max(2 * had / 60, math.ceil(equal / 60 - 1e-9))
  return math.max(0, math.floor(math.min(given, most, free / 60) + 1e-9)) * 60
end
local capacity, tcapacity = tonumber(ARGV[1]), tonumber(ARGV[7])
local wants, twants = math.min(tonumber(ARGV[3]), capacity), math.min(tonumber(ARGV[8]), tcapacity)
local used, tused = tonumber(ARGV[4]), tonumber(ARGV[9])
local had, thad = 0, 0
local others, tothers = {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = {}
  for field in string.gmatch(all[i + 1], '%S+') do f[#f + 1] = tonumber(field) end
  if all[i] == me then
    had, thad = f[2] or 0, f[5] or 0
  elseif #f ~= 7 or f[1] <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    others[#others + 1] = {f[2], f[3], all[i]}
    tothers[#tothers + 1] = {f[5], f[6], all[i]}
    used, tused = used + f[4], tused + f[7]
  end
end
local share = grant(capacity, wants, had, others, true)
local tshare = tcapacity > 0 and grant(tcapacity, twants, thad, tothers, false) or 0
local lease = {exact(now + tonumber(ARGV[5])), exact(share), exact(wants), ARGV[4],
               exact(tshare), exact(twants), ARGV[9]}
redis.call('HSET', KEYS[1], me, table.concat(lease, ' '))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
local pause_end = tonumber(redis.call('HGET', KEYS[2], 'pause_end') or '0')
return {exact(share), #others + 1, math.max(0, math.ceil(pause_end - now)), exact(used), exact(tshare), exact(tused)}
"""
)

# Gives ARGV 1's lease back (its process closes): the others may be granted it at once.
LEASE_RETURN = """
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# Nobody goes for ARGV 1 µs (a provider's 429), on any process: published on ARGV 3 as "pause µs
# ORIGIN" (ARGV 4) for the processes subscribed, and returned by every renewal while it lasts; a
# pause in effect that ends later stays. ARGV 2: the keys' idle TTL (s). Returns the µs left.
LEASE_PAUSE = (
    _NOW
    + """
local pause_end = math.max(tonumber(redis.call('HGET', KEYS[2], 'pause_end') or '0'), now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[2], 'pause_end', exact(pause_end))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
local left = math.ceil(pause_end - now)
redis.call('PUBLISH', ARGV[3], 'pause ' .. left .. ' ' .. ARGV[4])
return left
"""
)
