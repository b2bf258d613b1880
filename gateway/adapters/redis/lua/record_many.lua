-- record() for a batch: claim + carry + pending entry per record, by compare-and-set. The carry's exact Decimal rule
-- stays in Python (gateway.domain.units.settle; Lua has only doubles): a record whose carry changed since Python read
-- it is answered with the current carry, and Python settles it again. Each record is treated in turn, as if it ran
-- alone after the ones before it (a second record of an id finds the first's entry; a customer's carry goes from one
-- record to the next; a replay takes the place of the parked record it replaces, deleted with its index entries).
-- A record's checks come before its writes, and only the script's first write can be refused (maxmemory), so a batch
-- is all or nothing. A record travels as its entry blob plus one msgpack array of the rest (Redis's cmsgpack cannot
-- read msgpack's bin type). Key names are built here from prefixes, one reason Redis Cluster is not supported.
-- KEYS: 1 q:due, 2 q:age, 3 stats, 4.. ix:parked and ix:parked:<reason> for every reason
-- ARGV: 1 prefix of entry keys, 2 of parked keys, 3 of carry keys, 4 msgpack array of records, each an array
--       {event id, next_attempt_at, created_at, units, settles the carry (bool), the carry Python settled from
--        ('' = none), the new carry, the billing customer, the parked key replaced ('' = none)}; 4 + i the entry
--       blob of record i
-- Answers two items per record: 'created' '', 'exists' <entry blob>, 'parked' '', or 'carry' <current carry>.
local answer = {}
local units_pending = 0
for i, r in ipairs(cmsgpack.unpack(ARGV[4])) do
  local id = r[1]
  local entry_key = ARGV[1] .. id
  local existing = redis.call('GET', entry_key)
  local carry_key = ARGV[3] .. r[8]
  local carry = r[5] and (redis.call('GET', carry_key) or '') or ''
  if existing then
    answer[#answer + 1] = 'exists'
    answer[#answer + 1] = existing
  elseif r[9] ~= id and redis.call('EXISTS', ARGV[2] .. id) == 1 then
    answer[#answer + 1] = 'parked'
    answer[#answer + 1] = ''
  elseif r[5] and carry ~= r[6] then
    answer[#answer + 1] = 'carry'
    answer[#answer + 1] = carry
  else
    anchor(KEYS[1])
    anchor(KEYS[2])
    redis.call('SET', entry_key, ARGV[4 + i])
    if r[5] then redis.call('SET', carry_key, r[7]) end
    redis.call('ZADD', KEYS[1], r[2], id)
    redis.call('ZADD', KEYS[2], r[3], id)
    units_pending = units_pending + r[4]
    if r[9] ~= '' then
      redis.call('DEL', ARGV[2] .. r[9])
      for k = 4, #KEYS do redis.call('ZREM', KEYS[k], r[9]) end
    end
    answer[#answer + 1] = 'created'
    answer[#answer + 1] = ''
  end
end
if units_pending ~= 0 then redis.call('HINCRBY', KEYS[3], 'units_pending', units_pending) end
return answer
