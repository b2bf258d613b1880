-- Prepended to the scripts that add to the queues. Each queue (q:due, q:leased, q:age) holds ANCHOR, scored +inf, so
-- that Redis keeps it in the skiplist encoding: in a small sorted set (a listpack) every ZADD walks the whole list.
-- ANCHOR is longer than zset-max-listpack-value (64 bytes unless configured higher), is never removed, starts with a
-- NUL (no event id does), and every read of a queue stops below +inf. A script anchors a queue before its first ZADD
-- there: after a ZREM, or as its first write, so that Redis's out-of-memory refusal still hits the first write only.
-- The same string is gateway.adapters.redis.scripts.ANCHOR.
local ANCHOR = '\0anchor: a member over 64 bytes keeps this sorted set a skiplist in Redis; never an event id'
local anchored = {}
local function anchor(key)
  if not anchored[key] then
    redis.call('ZADD', key, 'inf', ANCHOR)
    anchored[key] = true
  end
end
local function zadd(key, score, member)
  anchor(key)
  redis.call('ZADD', key, score, member)
end
