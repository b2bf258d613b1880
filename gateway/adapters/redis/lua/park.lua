-- park(): a parked record claims its key unless an entry or a parked record already has it.
-- KEYS: 1 entry of this key, 2 parked record, 3 ix:parked, 4 ix:parked:<reason>
-- ARGV: 1 parked blob, 2 key, 3 parked_at
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
return 1
