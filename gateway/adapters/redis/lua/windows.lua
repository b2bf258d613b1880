-- Prepended to the scripts that count units per customer and hour of the event timestamp (keys.py: h:<hour> and
-- ix:hours). A counter that falls to 0 or below is deleted: it never goes negative, even when its hash expired while
-- an entry it counted lived on (a parked entry never expires). The hash lives the dedupe TTL after its last change.
local function count(hours, prefix, hour, field, delta, ttl)
  local key = prefix .. hour
  if redis.call('HINCRBY', key, field, delta) <= 0 then redis.call('HDEL', key, field) end
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', hours, hour, hour)
end
