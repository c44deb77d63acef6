-- Delete a stream (or, mode 'exp', expire it if its deadline really passed) and leave a tombstone,
-- so its id answers gone; listeners everywhere learn it from the stream's channel.
-- KEYS: meta, data, sealed, tombstone, index, chats, open set, deadlines, stream count
-- ARGV: 1 id, 2 tombstone json, 3 tombstone ttl, 4 mode ('del' | 'exp'), 5 now, 6 chat,
--       7 channel, 8 events channel, 9 origin, 10 default ttl, 11 grace
-- Returns 'ok' | 'moved' (not due yet) | 'gone' | 'nf'
local m, d, z, t, dl = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[8]
local id = ARGV[1]
local live = redis.call('EXISTS', m) == 1
local sealed = redis.call('EXISTS', z) == 1
if not live and not sealed then
  if redis.call('EXISTS', t) == 1 then return 'gone' end
  if not redis.call('ZSCORE', dl, id) then return 'nf' end
  -- freed by the keys' own expiry: finish the job (tombstone, indexes) below
end
if ARGV[4] == 'exp' and live then
  schedule(m, d, dl, id, ARGV[10], ARGV[11])
  local due = redis.call('ZSCORE', dl, id)
  if not due or tonumber(due) > tonumber(ARGV[5]) then return 'moved' end
end
redis.call('DEL', m, d, z)
redis.call('DECR', KEYS[9])
redis.call('SET', t, ARGV[2], 'EX', ARGV[3])
index_remove(KEYS[5], KEYS[6], ARGV[6], id)
redis.call('ZREM', KEYS[7], id)
redis.call('ZREM', dl, id)
redis.call('PUBLISH', ARGV[7], 'g')
redis.call('PUBLISH', ARGV[8], 'd ' .. ARGV[9] .. ' ' .. id)
return 'ok'
