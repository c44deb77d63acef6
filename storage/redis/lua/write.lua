-- Append a batch (mode 'a'), close the stream (mode 'c'), or close it as producer_lost if its
-- producer lease ran out (mode 'l': the compare-and-close every hub's sweep runs), atomically: idempotency check, XADD with
-- explicit ids 0-<offset+1>, the offset/epoch metadata, retention, and the live notification
-- (PUBLISH on the stream's channel, payload carrying epoch + offset so a receiver detects gaps).
-- The hot path (an append by a known producer, seq = last + 1) makes four calls: HMGET, XADD per
-- chunk, HSET, PUBLISH; each redis.call costs more than the Lua around it, so nothing is read twice.
-- KEYS: meta, data, open set, deadlines, leases (sorted set: id -> when its producer lease lapses)
-- ARGV: 1 the engine's constants "renew|publish cap|default ttl|grace|events channel|origin",
--       2 "mode|has seq|seq|producer epoch|has stream seq|now|hint|new epoch" (hint: "<epoch>:<next>"),
--       3 producer id ('' none; mode 'l': the stream id), 4 stream seq, 5 close json ('' none), 6.. chunks
-- Returns one string: 'ok <first> <count> <next> <epoch> <closed>' | 'dup <first> <count> <next>'
--       | 'err <code> <next> <message>' | 'missing' (no meta hash: sealed, gone or never created)
local m, d, openk, dl, lk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mode, has_seq, seq, pep, has_ss, now, hint, new_epoch =
  string.match(ARGV[2], '^(%a)|([01])|(%d+)|(%d+)|([01])|([^|]*)|([^|]*)|(.*)$')
has_seq, has_ss, seq, pep = has_seq == '1', has_ss == '1', tonumber(seq), tonumber(pep)
local pid = ARGV[3]
local use_win = pid ~= '' and has_seq
-- one HMGET for everything below, the producer's window included
local h = redis.call('HMGET', m, 'rid', 'ep', 'cl', 'n', 'ss', 'raw', 'id', 'xa', 'ttl', 'ittl',
  use_win and ('p:' .. pid) or 'id')
if not h[7] then
  if mode == 'l' then redis.call('ZREM', lk, ARGV[3]) end
  return 'missing'
end
local channel = string.sub(m, 1, -2) .. 'c'  -- keys.py: the stream's keys differ in their last letter
local renew, cap, default_ttl, grace, events, origin =
  string.match(ARGV[1], '^([01])|(%d+)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
local ep = check_epoch(m, channel, renew, new_epoch, hint, h)
local n, closed, sid = tonumber(h[4]), h[3], h[7]
local win = use_win and h[11] or nil  -- "epoch|seq,first,count|..." oldest first
local win_epoch, last
if win then
  win_epoch = tonumber(string.match(win, '^%d+'))
  last = tonumber(string.match(win, '|(%d+),%d+,%d+$'))
end

local function err(code, msg) return 'err ' .. code .. ' ' .. fmt(n) .. ' ' .. msg end
if mode == 'l' then  -- exactly once: only while the lease is still past due and the stream open
  local due = redis.call('ZSCORE', lk, sid)
  if closed or not due then
    redis.call('ZREM', lk, sid)
    return err('lease_not_due', 'closed, or no lease')
  end
  if tonumber(due) > tonumber(now) then return err('lease_not_due', 'renewed meanwhile') end
  mode = 'c'
end
if mode == 'a' and win then
  if pep == win_epoch then
    if seq <= last then
      for a, b, c in string.gmatch(win, '|(%d+),(%d+),(%d+)') do
        if tonumber(a) == seq then return 'dup ' .. b .. ' ' .. c .. ' ' .. fmt(n) end
      end
      return err('sequence_error', 'producer ' .. pid .. ' seq ' .. fmt(seq) ..
        ' is older than its retry window (last seq ' .. fmt(last) .. ')')
    end
    if seq > last + 1 then
      return err('sequence_gap', 'producer ' .. pid .. ' seq ' .. fmt(seq) .. ' skips past ' ..
        fmt(last + 1) .. ': appends in between were lost on the way')
    end
  elseif pep < win_epoch then
    return err('sequence_error', 'producer ' .. pid .. ' epoch ' .. fmt(pep) ..
      ' is older than ' .. fmt(win_epoch))
  end
end
if closed then
  return err('stream_closed', 'stream is closed (' .. cjson.decode(closed).status .. ')')
end
if mode == 'a' and has_ss and h[5] and not bytes_gt(ARGV[4], h[5]) then
  return err('sequence_error', 'Stream-Seq ' .. ARGV[4] .. ' is not after the last one, ' .. h[5])
end

-- the producer's window after this append: the entry added, the oldest dropped past the window
local function next_window(count)
  local entry = '|' .. fmt(seq) .. ',' .. fmt(n) .. ',' .. fmt(count)
  if not win or win_epoch ~= pep then return fmt(pep) .. entry end
  local w = win .. entry
  if select(2, string.gsub(w, '|', '|')) > PRODUCER_WINDOW then
    w = string.gsub(w, '^(%d+)|[^|]*', '%1', 1)
  end
  return w
end

local count = 0
if mode == 'a' then
  local lens, total = {}, 0
  for i = 6, #ARGV do
    count = count + 1
    redis.call('XADD', d, '0-' .. fmt(n + count), 'c', ARGV[i])
    lens[count] = fmt(#ARGV[i])
    total = total + #ARGV[i]
  end
  local fields = {'n', fmt(n + count), 'raw', fmt(tonumber(h[6]) + total), 'la', now, 'acc', now}
  if has_ss then fields[#fields + 1] = 'ss'; fields[#fields + 1] = ARGV[4] end
  if use_win then
    fields[#fields + 1] = 'p:' .. pid
    fields[#fields + 1] = next_window(count)
  end
  redis.call('HSET', m, unpack(fields))
  if total <= tonumber(cap) then
    redis.call('PUBLISH', channel, 'c ' .. ep .. ' ' .. fmt(n) .. ' ' .. table.concat(lens, ',') .. '\n' ..
      table.concat(ARGV, '', 6))
  else  -- too big to carry: receivers read it with XRANGE
    redis.call('PUBLISH', channel, 'n ' .. ep .. ' ' .. fmt(n) .. ' ' .. fmt(count))
  end
end
if mode == 'c' and use_win then
  redis.call('HSET', m, 'p:' .. pid, next_window(0))
end
local now_closed = 0
if ARGV[5] ~= '' then
  redis.call('HSET', m, 'cl', ARGV[5], 'cat', now, 'acc', now)
  redis.call('ZREM', openk, sid)
  redis.call('ZREM', lk, sid)
  redis.call('PUBLISH', channel, 'e ' .. ep .. ' ' .. fmt(n + count) .. ' ' .. ARGV[5])
  redis.call('PUBLISH', events, 'e ' .. origin .. ' ' .. sid)
  now_closed = 1
end
-- retention: only a stream that has (or had) a deadline needs it moved
if h[8] or h[9] or h[10] or (now_closed == 1 and default_ttl ~= '') then
  schedule(m, d, dl, sid, default_ttl, grace)
end
return 'ok ' .. fmt(n) .. ' ' .. fmt(count) .. ' ' .. fmt(n + count) .. ' ' .. ep .. ' ' .. fmt(now_closed)
