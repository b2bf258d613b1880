-- reject_sent(): claim an error report and move the sent entries it names to parked biller_rejected, in one step.
-- Answers -1, writing nothing, when the report was claimed before. Every entry must still have the bytes Python
-- decided from, or nothing is written and the positions that changed are answered (Python reads them again). A
-- moved entry loses its TTL (a parked entry is kept until it is replayed), leaves ix:sent and the sent counters, and
-- its units move from its hour's `s:` counter to its `r:` counter.
-- KEYS: 1 fr:<report id>, 2 stats, 3 ix:sent, 4 ix:parked, 5 ix:parked:biller_rejected, 6 ix:hours, then one entry
--       key per entry
-- ARGV: 1 dedupe TTL, 2 parked_at, 3 prefix of h: keys, 4 prefix of parked keys, 5 minus the number of entries,
--       6 minus their units, then per entry i (from 0) at 7 + 8i: the blob read, the new blob, its parked blob, the
--       event id, its units, minus its units, the hour of its timestamp, its billing customer
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local FIRST = 7
local changed = {}
for i = FIRST, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[7 + 8 * (i - FIRST)] then changed[#changed + 1] = i - FIRST end
end
if #changed > 0 then return changed end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
for i = FIRST, #KEYS do
  local at = 7 + 8 * (i - FIRST)
  local id = ARGV[at + 3]
  redis.call('SET', KEYS[i], ARGV[at + 1])
  redis.call('SET', ARGV[4] .. id, ARGV[at + 2])
  redis.call('ZADD', KEYS[4], ARGV[2], id)
  redis.call('ZADD', KEYS[5], ARGV[2], id)
  redis.call('ZREM', KEYS[3], id)
  count(KEYS[6], ARGV[3], ARGV[at + 6], 's:' .. ARGV[at + 7], ARGV[at + 5], ARGV[1])
  count(KEYS[6], ARGV[3], ARGV[at + 6], 'r:' .. ARGV[at + 7], ARGV[at + 4], ARGV[1])
end
if #KEYS >= FIRST then
  redis.call('HINCRBY', KEYS[2], 'sent', ARGV[5])
  redis.call('HINCRBY', KEYS[2], 'units_sent', ARGV[6])
end
return changed
