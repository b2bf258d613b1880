-- release(): leased ids go back to q:due at the next_attempt_at they had before the lease.
-- KEYS: 1 q:due, 2 q:leased, 3 q:held.  ARGV: the ids
for _, id in ipairs(ARGV) do
  local due_at = redis.call('HGET', KEYS[3], id)
  if due_at then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    zadd(KEYS[1], due_at, id)
  end
end
return 0
