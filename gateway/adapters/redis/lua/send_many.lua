-- The local ledger biller: each event recorded unless its identifier is known, in order; 1 (recorded) or 0 each.
-- KEYS: 1 meter_events, then m:<identifier> per event.  ARGV: the meter event blobs, in the same order
local stored = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX') then
    redis.call('RPUSH', KEYS[1], ARGV[i - 1])
    stored[i - 1] = 1
  else
    stored[i - 1] = 0
  end
end
return stored
