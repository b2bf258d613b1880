-- An operator's replay of a biller-rejected entry: both the entry and its parked record must still be the bytes
-- Python decided from, so two concurrent replays requeue it once. A biller_rejected entry leaves its hour's `r:`
-- counter (under the customer and timestamp it had: the replay may change both).
-- KEYS: 1 entry, 2 parked record, 3 q:due, 4 q:age, 5 stats, 6 ix:parked, 7 ix:hours,
--       8.. ix:parked:<reason> for every reason
-- ARGV: 1 entry blob read, 2 parked blob read, 3 new blob, 4 event id, 5 next_attempt_at, 6 created_at, 7 units,
--       8 dedupe TTL, 9 prefix of h: keys, 10 the hour of its old timestamp ('' = not counted: it was parked
--       too_old), 11 its old billing customer, 12 minus its units
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
anchor(KEYS[3])
anchor(KEYS[4])
redis.call('SET', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[6], ARGV[4])
for i = 8, #KEYS do redis.call('ZREM', KEYS[i], ARGV[4]) end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
redis.call('HINCRBY', KEYS[5], 'units_pending', ARGV[7])
if ARGV[10] ~= '' then count(KEYS[7], ARGV[9], ARGV[10], 'r:' .. ARGV[11], ARGV[12], ARGV[8]) end
return 1
