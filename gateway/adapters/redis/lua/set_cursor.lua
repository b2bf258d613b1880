-- set_cursor(): a cursor only ever moves forward; 1 when it moved, 0 when the stored value is as large.
-- KEYS: 1 cursors.  ARGV: 1 name, 2 value
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
