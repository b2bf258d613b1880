-- mark_sent for a batch, all or nothing: every entry must still have the bytes Python decided from, or nothing is
-- written and the positions that changed are answered (Python reads them again and decides afresh).
-- KEYS: 1 q:due, 2 q:leased, 3 q:held, 4 q:age, 5 stats, then one entry key per entry
-- ARGV: 1 dedupe TTL in seconds, then per entry i (from 0) at 2 + 4i: the blob read, the new blob, the event id,
--       its units
local changed = {}
for i = 6, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[2 + 4 * (i - 6)] then changed[#changed + 1] = i - 6 end
end
if #changed > 0 then return changed end
local units = 0
for i = 6, #KEYS do
  local at = 2 + 4 * (i - 6)
  local id = ARGV[at + 2]
  redis.call('SET', KEYS[i], ARGV[at + 1], 'EX', ARGV[1])
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  units = units + tonumber(ARGV[at + 3])
end
redis.call('HINCRBY', KEYS[5], 'sent', #KEYS - 5)
redis.call('HINCRBY', KEYS[5], 'units_sent', units)
redis.call('HINCRBY', KEYS[5], 'units_pending', 0 - units)  -- never -units: -0 is not an integer to Redis
return changed
