-- A stream's state, for a hub that (re)learns it: the meta hash (after the epoch check), the sealed
-- value, or why there is none.
-- KEYS: meta, sealed, tombstone, deadlines
-- ARGV: 1 renew, 2 new epoch, 3 hint, 4 channel, 5 id
-- Returns {'m', field, value, ...} | {'z', sealed} | {'gone'} | {'nf'}
local m = KEYS[1]
if redis.call('EXISTS', m) == 1 then
  check_epoch(m, ARGV[4], ARGV[1], ARGV[2], ARGV[3])
  return {'m', unpack(redis.call('HGETALL', m))}
end
local sealed = redis.call('GET', KEYS[2])
if sealed then return {'z', sealed} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'gone'} end
-- past its deadline and freed by the keys' own expiry before retention wrote the tombstone
if redis.call('ZSCORE', KEYS[4], ARGV[5]) then return {'gone'} end
return {'nf'}
