-- The local ledger biller: each event recorded unless its identifier is known, in order; 1 (recorded) or 0 each.
-- A recorded event's value is added to its customer's units for the hour of its timestamp (mh:<customer>).
-- KEYS: 1 meter_events, then m:<identifier> per event.
-- ARGV: 1 prefix of mh: keys, then per event i (from 0) at 2 + 4i: its blob, its customer, the hour of its
--       timestamp, its value
local stored = {}
for i = 2, #KEYS do
  local at = 2 + 4 * (i - 2)
  if redis.call('SET', KEYS[i], '1', 'NX') then
    redis.call('RPUSH', KEYS[1], ARGV[at])
    redis.call('HINCRBY', ARGV[1] .. ARGV[at + 1], ARGV[at + 2], ARGV[at + 3])
    stored[i - 1] = 1
  else
    stored[i - 1] = 0
  end
end
return stored
