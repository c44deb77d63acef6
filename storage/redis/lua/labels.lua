-- Replace a stream's meta (its labels): in the meta hash, or in the sealed value when it is the
-- one the hub rewrote (compare-and-set, keeping the expiry). Hubs listening to the stream learn
-- the new meta on its channel (their live handles answer lookups without a round trip).
-- KEYS: meta, sealed    ARGV: 1 meta json, 2 expected sealed value, 3 new sealed value
local channel = string.sub(KEYS[1], 1, -2) .. 'c'  -- keys.py: the stream's keys differ in their last letter
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'meta', ARGV[1])
  redis.call('PUBLISH', channel, 'l ' .. ARGV[1])
  return 'ok'
end
local cur = redis.call('GET', KEYS[2])
if not cur then return 'nf' end
if ARGV[2] == '' then return 'sealed' end
if cur ~= ARGV[2] then return 'retry' end
redis.call('SET', KEYS[2], ARGV[3], 'KEEPTTL')
redis.call('PUBLISH', channel, 'l ' .. ARGV[1])
return 'ok'
