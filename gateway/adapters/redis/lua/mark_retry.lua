-- mark_retry(): compare-and-set on the entry's bytes; 0 (nothing written) when it changed since Python read it.
-- KEYS: 1 entry, 2 q:due, 3 q:leased, 4 q:held
-- ARGV: 1 entry blob read, 2 new blob, 3 event id, 4 next_attempt_at
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
anchor(KEYS[2])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
return 1
