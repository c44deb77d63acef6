-- Replace a finished stream's meta hash and entries by one compressed value (built by the hub from
-- exactly this state: same end offset, same meta), keeping its expiry.
-- KEYS: meta, data, sealed
-- ARGV: 1 expected next offset, 2 expected meta json, 3 sealed value
local m = KEYS[1]
local h = redis.call('HMGET', m, 'n', 'meta', 'cl')
if not h[3] or h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return 0 end
local ttl = redis.call('PTTL', m)
redis.call('SET', KEYS[3], ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
redis.call('DEL', m, KEYS[2])
return 1
