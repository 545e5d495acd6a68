-- One sync of an instance with its fleet (CONTRACT §7), run atomically by Redis.
-- Time is Redis's own (TIME), so the gateways' clocks never matter.
--
-- KEYS[1]      the fleet's members (sorted set: instance -> last heartbeat, ms)
-- KEYS[2..]    one hash per bucket: t = arrival time of the token bucket (µs,
--              GCRA: the instant it is full again; in the past when it is
--              full, kept as is so that reports of the same spell arriving
--              one after the other all draw on one refill), w = last instance that
--              spent from it, m = until when (ms) it counts as shared by more
--              than one instance, o and e = the instance last told it spends
--              alone (so may spend the whole remainder at full cost) and until
--              when (ms) it may, unless it syncs first
-- ARGV[1]      this instance's id (random, per process)
-- ARGV[2]      this instance's sync period, ms (members are stale after 3)
-- ARGV[3]      "1": count this call as the heartbeat
-- ARGV[4]      Redis time (µs) after which this call must change nothing,
--              "0" for none: the instance gives up on a call after
--              timeout_ms and sends its report again, but a stalled server
--              still runs what was queued once it resumes
-- ARGV[5..]    per bucket: interval µs, capacity µs, requests admitted since
--              the last report, µs since the first of them, and when the
--              instance last read it would be full again (Redis time, µs; 0
--              if never): where a bucket Redis lost (a restart, a failover)
--              starts again, and "1" when the instance refused a request and
--              holds no reserved token
--
-- Returns {instances, now, level_1, shared_1, reserved_1, ...}: now
-- is Redis's time (µs, as text); level is how far (µs, as text) the bucket
-- is from full after this report; shared is 0 when this instance is the
-- only one spending from it (it may spend the whole remainder, for 3 of its
-- periods), 1 when another instance spent from it lately or the fleet has
-- no record of it, 2 when moreover another instance was told it spends
-- alone and has not synced since (this one keeps to what it holds);
-- reserved is 1 when one token was taken for this instance to spend later
-- (fewer whole tokens are left than instances, so a share of them is less
-- than one; the one that is refusing gets one, counted now, once). A call
-- past its deadline returns {-1, now} and changes nothing.
-- Every key written gets a TTL: a bucket's is the time it takes to refill
-- (at least as long as it counts as shared).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now_ms = math.floor(now / 1000)
local me = ARGV[1]
local stale = 3 * tonumber(ARGV[2])
local deadline = tonumber(ARGV[4])
if deadline > 0 and now > deadline then
  return {-1, string.format('%.0f', now)}
end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now_ms, me)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - stale)
  redis.call('PEXPIRE', KEYS[1], stale + 1000)
end
local instances = redis.call('ZCARD', KEYS[1])
local out = {instances, string.format('%.0f', now)}
for i = 2, #KEYS do
  local a = 5 + (i - 2) * 6
  local interval = tonumber(ARGV[a])
  local capacity = tonumber(ARGV[a + 1])
  local used = tonumber(ARGV[a + 2])
  local age = tonumber(ARGV[a + 3])
  local known = tonumber(ARGV[a + 4])
  local wants = ARGV[a + 5] == '1'
  -- At most empty: an instance's view can hold a lost bucket, not put it
  -- in debt.
  if known > now + capacity then known = now + capacity end
  local key = KEYS[i]
  local state = redis.call('HMGET', key, 't', 'w', 'm', 'o', 'e')
  -- Spent from the first admission on, not all now: the refill since then
  -- counts (what an outage held back is not a burst at its end). A bucket
  -- Redis does not hold was full then (never used, or expired: full again),
  -- unless an instance last saw it fuller than that (Redis lost it).
  local from = now - age
  local tat = tonumber(state[1]) or math.max(from, known)
  if tat < from then tat = from end
  local multi = tonumber(state[3]) or 0
  local writer = state[2]
  -- No instance has spent from it that Redis knows of (new, refilled and
  -- expired, or lost): others may be starting on it at this very moment.
  local fresh = not writer
  -- A report writes; so does a bucket Redis lost that an instance saw in
  -- use, so that every instance finds it again.
  if used > 0 or (not state[1] and known > now) then
    tat = tat + used * interval
    -- Over-spend (shares read before others spent, or a degraded spell) is
    -- kept as debt and repaid, up to one more bucket's worth.
    if tat > now + 2 * capacity then tat = now + 2 * capacity end
    -- Once several instances spend from a bucket, it stays shared for 10 s
    -- (or 3 periods): traffic that went quiet comes back through the same
    -- load balancer, to every instance at once.
    if writer and writer ~= me then multi = now_ms + math.max(stale, 10000) end
    redis.call('HSET', key, 't', string.format('%.3f', tat), 'w', me, 'm', multi)
    -- Kept at least 3 periods, for the other reports of the same spell.
    local ttl = math.max(stale, math.ceil((tat - now) / 1000), multi - now_ms)
    redis.call('PEXPIRE', key, ttl)
    writer = me
  end
  if tat < now then tat = now end
  local shared = 0
  if fresh or multi > now_ms or writer ~= me then shared = 1 end
  local owner = state[4]
  if shared == 0 then
    -- Alone: it may spend the whole remainder until it syncs again, or for
    -- 3 of its periods; the key lives at least that long.
    redis.call('HSET', key, 'o', me, 'e', now_ms + stale)
    if redis.call('PTTL', key) < stale then redis.call('PEXPIRE', key, stale) end
  elseif owner == me then
    -- The instance told it was alone now knows it is not.
    redis.call('HDEL', key, 'o', 'e')
  elseif owner and (tonumber(state[5]) or 0) > now_ms then
    -- Another instance may still be spending the remainder it was told was
    -- its own: what Redis holds does not count it yet.
    shared = 2
  end
  local reserved = 0
  if wants and shared == 1 then
    local left = math.floor((now + capacity - tat) / interval)
    if left >= 1 and left < instances then
      tat = tat + interval
      redis.call('HSET', key, 't', string.format('%.3f', tat))
      local ttl = math.ceil((tat - now) / 1000)
      if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
      reserved = 1
    end
  end
  out[#out + 1] = string.format('%.3f', tat - now)
  out[#out + 1] = shared
  out[#out + 1] = reserved
end
return out
