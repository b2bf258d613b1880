-- lease_due(): expired leases come back first (a crashed dispatcher's entries), then due ids move from q:due to
-- q:leased, all in one step, so two dispatchers can never take the same id: the second finds it gone from q:due.
-- A due id whose customer has a live lease (an id in q:leased, after the expired ones went back) is skipped, so a
-- customer belongs to one dispatcher at a time. At most ARGV[5] due ids are looked at, so that a large backlog of
-- held customers costs one bounded step; the ids beyond it wait for a later call. With ARGV[6] '0' (a biller with no
-- per-customer rule) no customer is held: every due id is leased, and the leased ids are not even read.
-- KEYS: 1 q:due, 2 q:leased, 3 q:held
-- ARGV: 1 now, 2 limit, 3 lease deadline, 4 prefix of entry keys, 5 how many due ids to look at, at most,
--       6 '1' to hold customers, '0' not to
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  local due_at = redis.call('HGET', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if due_at then zadd(KEYS[1], due_at, id) end
end
local function customer_of(blob)
  return cmsgpack.unpack(blob)['billing_customer']
end
local hold = ARGV[6] == '1'
local held = {}
if hold then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(inf')) do
    local blob = redis.call('GET', ARGV[4] .. id)
    if blob then held[customer_of(blob)] = true end
  end
end
local limit, budget = tonumber(ARGV[2]), tonumber(ARGV[5])
local leased, skipped, seen = {}, 0, 0
while #leased < limit and seen < budget do
  local due = redis.call(
    'ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', skipped, limit - #leased
  )
  if #due == 0 then break end
  for i = 1, #due, 2 do
    local id, due_at = due[i], due[i + 1]
    seen = seen + 1
    local blob = redis.call('GET', ARGV[4] .. id)
    if not blob then
      redis.call('ZREM', KEYS[1], id)
    elseif hold and held[customer_of(blob)] then
      skipped = skipped + 1
    else
      redis.call('ZREM', KEYS[1], id)
      zadd(KEYS[2], ARGV[3], id)
      redis.call('HSET', KEYS[3], id, due_at)
      leased[#leased + 1] = blob
    end
  end
end
return leased
