-- mark_rejected(): compare-and-set on the entry's bytes; 0 (nothing written) when it changed since Python read it.
-- An entry parked biller_rejected is still owed to the biller: its units join its hour's `r:` counter.
-- KEYS: 1 entry, 2 q:due, 3 q:leased, 4 q:held, 5 q:age, 6 stats, 7 parked record, 8 ix:parked,
--       9 ix:parked:<the reason it is parked for>, 10 ix:hours, 11.. ix:parked:<reason> for every reason
-- ARGV: 1 entry blob read, 2 new blob, 3 event id, 4 minus the units, 5 parked blob, 6 parked_at, 7 dedupe TTL,
--       8 prefix of h: keys, 9 the hour of its timestamp ('' = not counted: parked too_old), 10 its billing customer,
--       11 its units
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('HINCRBY', KEYS[6], 'units_pending', ARGV[4])
-- Overwrite, as MemoryLedger does: a rejection must always be recordable, never stuck on a conflict.
redis.call('SET', KEYS[7], ARGV[5])
for i = 11, #KEYS do redis.call('ZREM', KEYS[i], ARGV[3]) end
redis.call('ZADD', KEYS[8], ARGV[6], ARGV[3])
redis.call('ZADD', KEYS[9], ARGV[6], ARGV[3])
if ARGV[9] ~= '' then count(KEYS[10], ARGV[8], ARGV[9], 'r:' .. ARGV[10], ARGV[11], ARGV[7]) end
return 1
