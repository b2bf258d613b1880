-- lease_due(): expired leases come back first (a crashed dispatcher's entries), then due ids move from q:due to
-- q:leased, all in one step, so two dispatchers can never take the same id: the second finds it gone from q:due.
-- KEYS: 1 q:due, 2 q:leased, 3 q:held
-- ARGV: 1 now, 2 limit, 3 lease deadline, 4 prefix of entry keys
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  local due_at = redis.call('HGET', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if due_at then zadd(KEYS[1], due_at, id) end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local leased = {}
for i = 1, #due, 2 do
  local id, due_at = due[i], due[i + 1]
  redis.call('ZREM', KEYS[1], id)
  local blob = redis.call('GET', ARGV[4] .. id)
  if blob then
    zadd(KEYS[2], ARGV[3], id)
    redis.call('HSET', KEYS[3], id, due_at)
    leased[#leased + 1] = blob
  end
end
return leased
