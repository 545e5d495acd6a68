-- Fleet-wide last use of keys (CONTRACT §7, `last_used_at` in GET /keys).
-- KEYS[i]: one key's entry (named by a hash of its id, never the key);
-- ARGV[1]: TTL in seconds; ARGV[1 + i]: its last use on this instance (unix s).
-- Keeps the latest, and returns it for each key.
local out = {}
for i = 1, #KEYS do
  local mine = tonumber(ARGV[i + 1])
  local seen = tonumber(redis.call('GET', KEYS[i]) or '0')
  if mine > seen then
    redis.call('SET', KEYS[i], mine, 'EX', ARGV[1])
    seen = mine
  end
  out[i] = seen
end
return out
