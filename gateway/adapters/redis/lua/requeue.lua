-- An operator's replay of a biller-rejected entry: both the entry and its parked record must still be the bytes
-- Python decided from, so two concurrent replays requeue it once.
-- KEYS: 1 entry, 2 parked record, 3 q:due, 4 q:age, 5 stats, 6 ix:parked, 7.. ix:parked:<reason> for every reason
-- ARGV: 1 entry blob read, 2 parked blob read, 3 new blob, 4 event id, 5 next_attempt_at, 6 created_at, 7 units
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
anchor(KEYS[3])
anchor(KEYS[4])
redis.call('SET', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
for i = 6, #KEYS do redis.call('ZREM', KEYS[i], ARGV[4]) end
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
redis.call('HINCRBY', KEYS[5], 'units_pending', ARGV[7])
return 1
