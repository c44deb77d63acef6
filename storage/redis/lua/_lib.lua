-- Shared by every script (storage/redis/scripts.py prepends this file to each one).
-- Numbers travel as decimal strings; offsets and seqs stay below 2^53, so Lua's doubles hold them.

local function fmt(x) return string.format('%d', x) end

-- The Redis incarnation: its run_id changes on every restart and failover. A stream written under
-- another incarnation may have lost acknowledged writes (AOF everysec, asynchronous replicas).
-- Every call's first ARGV is the run_id of the server its connection was opened to
-- (storage/redis/pipe.py reads it at each connect): a TCP connection never outlives a server
-- process, so it is this server's, and it costs no INFO per call. The scripts' own ARGV follow.
local RUN_ID = table.remove(ARGV, 1)
local function run_id() return RUN_ID end

-- Byte-wise "a > b" (Lua's own string order follows the server's locale).
local function bytes_gt(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- Before anything reads or writes an open stream: renew its epoch when Redis may have lost data
-- that a reader already saw. Two signs: the stream was last touched by another Redis incarnation
-- (and the fsync policy does not make acknowledged writes survive a restart: ``renew`` = '1'), or
-- a hub already saw offsets of this epoch past what Redis now holds (``hint``: "<epoch>:<offset>",
-- what it knew; a hint of an older epoch says nothing). Returns the stream's epoch.
local function check_epoch(m, channel, renew, new_epoch, hint, h)
  -- h: the meta hash's rid, ep, cl, n (fetched here unless the caller already has them)
  h = h or redis.call('HMGET', m, 'rid', 'ep', 'cl', 'n')
  local rid = run_id()
  local ep = h[2]
  local hint_epoch, hint_next = string.match(hint, '^(%w*):(%d+)$')
  local lost = hint_epoch == ep and tonumber(hint_next) > tonumber(h[4])
  if h[1] ~= rid then
    if renew == '1' and not h[3] then lost = true end
    redis.call('HSET', m, 'rid', rid)
  end
  if lost then
    ep = new_epoch
    redis.call('HSET', m, 'ep', ep)
    redis.call('PUBLISH', channel, 'r ' .. ep .. ' ' .. h[4])
  end
  return ep
end

-- The stream's deadline: the earliest of its absolute expiry, close + ttl, last access + idle ttl.
-- Kept in the deadlines sorted set (retention deletes from it, leaving a tombstone) and, ``grace``
-- seconds later, as the keys' own PEXPIREAT: memory is freed even if no hub runs retention.
local function schedule(m, d, dl, id, default_ttl, grace)
  local f = redis.call('HMGET', m, 'xa', 'ttl', 'ittl', 'acc', 'cat')
  local best = nil
  local function take(t) if t and (best == nil or t < best) then best = t end end
  take(tonumber(f[1]))
  local ttl = tonumber(f[2]) or tonumber(default_ttl)
  if f[5] and ttl then take(tonumber(f[5]) + ttl) end
  if f[3] and f[4] then take(tonumber(f[4]) + tonumber(f[3])) end
  if best then
    redis.call('ZADD', dl, best, id)
    local at = math.floor((best + tonumber(grace)) * 1000)
    redis.call('PEXPIREAT', m, at)
    redis.call('PEXPIREAT', d, at)
  else
    redis.call('ZREM', dl, id)
    redis.call('PERSIST', m)
    redis.call('PERSIST', d)
  end
end

-- A stream's id in the listing indexes: ids under ``chat/<chat>/`` sit in that chat's own sorted
-- set (listed in O(log n + k), one slot per chat on a Cluster) and the chat in the chats set; every
-- other id in the one ids set. ``chat`` is '' for ids outside a chat.
local function index_add(idx, chats, chat, id)
  redis.call('ZADD', idx, 0, id)
  if chat ~= '' then redis.call('ZADD', chats, 0, chat) end
end

local function index_remove(idx, chats, chat, id)
  redis.call('ZREM', idx, id)
  if chat ~= '' and redis.call('ZCARD', idx) == 0 then redis.call('ZREM', chats, chat) end
end
