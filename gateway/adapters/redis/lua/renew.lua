-- renew(): the ids still leased at `now` (a pending id is in q:leased only while leased) get the new deadline; an
-- id whose lease ran out, or that was marked or released, is left alone. Returns the ids renewed.
-- KEYS: 1 q:leased.  ARGV: 1 now, 2 new deadline, 3... the ids
local renewed = {}
local now = tonumber(ARGV[1])
for i = 3, #ARGV do
  local until_ = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if until_ and tonumber(until_) > now then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[i])
    renewed[#renewed + 1] = ARGV[i]
  end
end
return renewed
