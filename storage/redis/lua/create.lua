-- Create a stream: its meta hash, its place in the indexes, its deadline; the id stops answering gone.
-- KEYS: meta, data, sealed, tombstone, index, chats, open set, deadlines, stream count
-- ARGV: 1 id, 2 meta json, 3 epoch, 4 now, 5 chat, 6 expires_at, 7 ttl, 8 idle ttl, 9 default ttl,
--       10 grace, 11 events channel, 12 origin, 13 replace a tombstone ('1') or answer 'gone'
local m, d, z, t = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', m) == 1 or redis.call('EXISTS', z) == 1 then return 'exists' end
-- a reader holding an offset of the deleted stream must never resume into a new one
if ARGV[13] ~= '1' and redis.call('EXISTS', t) == 1 then return 'gone' end
redis.call('DEL', t, d)
redis.call('HSET', m, 'id', ARGV[1], 'meta', ARGV[2], 'ep', ARGV[3], 'n', '0', 'raw', '0',
  'acc', ARGV[4], 'rid', run_id())
if ARGV[6] ~= '' then redis.call('HSET', m, 'xa', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', m, 'ttl', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', m, 'ittl', ARGV[8]) end
index_add(KEYS[5], KEYS[6], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[7], 0, ARGV[1])
redis.call('INCR', KEYS[9])
schedule(m, d, KEYS[8], ARGV[1], ARGV[9], ARGV[10])
redis.call('PUBLISH', ARGV[11], 'c ' .. ARGV[12] .. ' ' .. ARGV[1])
return 'ok'
