-- One sync of an instance with its fleet (CONTRACT §7), run atomically by Redis.
-- Time is Redis's own (TIME), so the gateways' clocks never matter.
--
-- KEYS[1]      the fleet's members (sorted set: instance -> last heartbeat, ms)
-- KEYS[2..]    one hash per bucket: t = arrival time of the token bucket (µs,
--              GCRA: the instant it is full again; in the past when it is
--              full, kept as is so that reports of the same spell arriving
--              one after the other all draw on one refill), w = last instance that
--              spent from it, m = until when (ms) it counts as shared by more
--              than one instance
-- ARGV[1]      this instance's id (random, per process)
-- ARGV[2]      this instance's sync period, ms (members are stale after 3)
-- ARGV[3]      "1": count this call as the heartbeat
-- ARGV[4..]    per bucket: interval µs, capacity µs, requests admitted since
--              the last report, µs since the first of them
--
-- Returns {instances, level_1, shared_1, level_2, shared_2, ...}: level is
-- how far (µs, as text) the bucket is from full after this report; shared
-- is 1 when another instance spent from it lately.
-- Every key written gets a TTL: a bucket's is the time it takes to refill
-- (at least as long as it counts as shared).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now_ms = math.floor(now / 1000)
local me = ARGV[1]
local stale = 3 * tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now_ms, me)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - stale)
  redis.call('PEXPIRE', KEYS[1], stale + 1000)
end
local out = {redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 4
  local interval = tonumber(ARGV[a])
  local capacity = tonumber(ARGV[a + 1])
  local used = tonumber(ARGV[a + 2])
  local age = tonumber(ARGV[a + 3])
  local key = KEYS[i]
  local state = redis.call('HMGET', key, 't', 'w', 'm')
  -- Spent from the first admission on, not all now: the refill since then
  -- counts (what an outage held back is not a burst at its end). A bucket
  -- Redis does not hold (never used, expired, or lost with Redis) was full
  -- then.
  local from = now - age
  local tat = tonumber(state[1]) or from
  if tat < from then tat = from end
  local multi = tonumber(state[3]) or 0
  local writer = state[2]
  if used > 0 then
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
  if multi > now_ms or (writer and writer ~= me) then shared = 1 end
  out[#out + 1] = string.format('%.3f', tat - now)
  out[#out + 1] = shared
end
return out
