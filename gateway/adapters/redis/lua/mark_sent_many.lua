-- mark_sent for a batch, all or nothing: every entry must still have the bytes Python decided from, or nothing is
-- written and the positions that changed are answered (Python reads them again and decides afresh). Each entry sent
-- joins ix:sent and its customer's hour counter (keys.py).
-- KEYS: 1 q:due, 2 q:leased, 3 q:held, 4 q:age, 5 stats, 6 ix:sent, 7 ix:hours, then one entry key per entry
-- ARGV: 1 dedupe TTL in seconds, 2 now (the sent_at), 3 now minus the TTL (ix:sent keeps nothing older), 4 prefix of
--       h: keys, then per entry i (from 0) at 5 + 6i: the blob read, the new blob, the event id, its units, the hour of
--       its timestamp, its billing customer
local FIRST = 8
local changed = {}
for i = FIRST, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[5 + 6 * (i - FIRST)] then changed[#changed + 1] = i - FIRST end
end
if #changed > 0 then return changed end
local units = 0
for i = FIRST, #KEYS do
  local at = 5 + 6 * (i - FIRST)
  local id = ARGV[at + 2]
  redis.call('SET', KEYS[i], ARGV[at + 1], 'EX', ARGV[1])
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[6], ARGV[2], id)
  count(KEYS[7], ARGV[4], ARGV[at + 4], 's:' .. ARGV[at + 5], ARGV[at + 3], ARGV[1])
  units = units + tonumber(ARGV[at + 3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[3])
redis.call('HINCRBY', KEYS[5], 'sent', #KEYS - FIRST + 1)
redis.call('HINCRBY', KEYS[5], 'units_sent', units)
redis.call('HINCRBY', KEYS[5], 'units_pending', 0 - units)  -- never -units: -0 is not an integer to Redis
return changed
