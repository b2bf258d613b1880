-- record_correction(): the first correction of an identifier is kept (1); a second one changes nothing (0).
-- KEYS: 1 fixes, 2 ix:fixes.  ARGV: 1 identifier, 2 correction blob, 3 its window's start
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
