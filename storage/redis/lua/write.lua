-- Append a batch (mode 'a') or close the stream (mode 'c'), atomically: idempotency check, XADD with
-- explicit ids 0-<offset+1>, the offset/epoch metadata, retention, and the live notification
-- (PUBLISH on the stream's channel, payload carrying epoch + offset so a receiver detects gaps).
-- KEYS: meta, data, sealed, tombstone, open set, deadlines
-- ARGV: 1 mode, 2 the engine's constants "renew|publish cap|default ttl|grace|events channel|origin",
--       3 new epoch, 4 now, 5 hint, 6 producer id ('' none), 7 has seq, 8 seq, 9 producer epoch,
--       10 has stream seq, 11 stream seq, 12 close json ('' none), 13.. chunks
-- Returns {'ok', first, count, next, epoch, closed} | {'dup', first, count, next}
--       | {'err', code, msg, next}
--       | {'sealed'} | {'gone'} | {'nf'}
local m, d, z, t, openk, dl = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local mode = ARGV[1]
-- one HMGET for everything below (each redis.call costs more than the work it does)
local h = redis.call('HMGET', m, 'rid', 'ep', 'cl', 'n', 'ss', 'raw', 'id', 'xa', 'ttl', 'ittl')
if not h[7] then
  if redis.call('EXISTS', z) == 1 then return {'sealed'} end
  if redis.call('EXISTS', t) == 1 then return {'gone'} end
  return {'nf'}
end
local channel = string.sub(m, 1, -2) .. 'c'  -- keys.py: the stream's keys differ in their last letter
local renew, cap, default_ttl, grace, events, origin =
  string.match(ARGV[2], '^([01])|(%d+)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
local ep = check_epoch(m, channel, renew, ARGV[3], ARGV[5], h)
local n, closed, sid = tonumber(h[4]), h[3], h[7]
h = {h[4], h[3], h[5], h[6], h[7], h[8], h[9], h[10]}  -- n, cl, ss, raw, id, xa, ttl, ittl
local now = ARGV[4]
local pid, has_seq = ARGV[6], ARGV[7] == '1'
local seq, pep = tonumber(ARGV[8]), tonumber(ARGV[9])
local win = nil
if pid ~= '' and has_seq then
  local raw = redis.call('HGET', m, 'p:' .. pid)
  if raw then win = parse_window(raw) end
end

if mode == 'a' and win then
  local last = win.entries[#win.entries][1]
  if pep == win.epoch then
    if seq <= last then
      for _, e in ipairs(win.entries) do
        if e[1] == seq then return {'dup', fmt(e[2]), fmt(e[3]), fmt(n)} end
      end
      return {'err', 'sequence_error', 'producer ' .. pid .. ' seq ' .. fmt(seq) ..
        ' is older than its retry window (last seq ' .. fmt(last) .. ')', fmt(n)}
    end
    if seq > last + 1 then
      return {'err', 'sequence_gap', 'producer ' .. pid .. ' seq ' .. fmt(seq) .. ' skips past ' ..
        fmt(last + 1) .. ': appends in between were lost on the way', fmt(n)}
    end
  elseif pep < win.epoch then
    return {'err', 'sequence_error', 'producer ' .. pid .. ' epoch ' .. fmt(pep) ..
      ' is older than ' .. fmt(win.epoch), fmt(n)}
  end
end
if closed then
  return {'err', 'stream_closed', 'stream is closed (' .. cjson.decode(closed).status .. ')', fmt(n)}
end
if mode == 'a' and ARGV[10] == '1' then
  if h[3] and not bytes_gt(ARGV[11], h[3]) then
    return {'err', 'sequence_error', 'Stream-Seq ' .. ARGV[11] .. ' is not after the last one, ' .. h[3], fmt(n)}
  end
end

local count = 0
if mode == 'a' then
  local lens, total = {}, 0
  for i = 13, #ARGV do
    count = count + 1
    redis.call('XADD', d, '0-' .. fmt(n + count), 'c', ARGV[i])
    lens[count] = fmt(#ARGV[i])
    total = total + #ARGV[i]
  end
  local fields = {'n', fmt(n + count), 'raw', fmt(tonumber(h[4]) + total), 'la', now, 'acc', now}
  if ARGV[10] == '1' then fields[#fields + 1] = 'ss'; fields[#fields + 1] = ARGV[11] end
  if pid ~= '' and has_seq then
    if not win or win.epoch ~= pep then win = {epoch = pep, entries = {}} end
    win.entries[#win.entries + 1] = {seq, n, count}
    while #win.entries > PRODUCER_WINDOW do table.remove(win.entries, 1) end
    fields[#fields + 1] = 'p:' .. pid
    fields[#fields + 1] = format_window(win)
  end
  redis.call('HSET', m, unpack(fields))
  if total <= tonumber(cap) then
    local data = {}
    for i = 13, #ARGV do data[#data + 1] = ARGV[i] end
    redis.call('PUBLISH', channel, 'c ' .. ep .. ' ' .. fmt(n) .. ' ' .. table.concat(lens, ',') .. '\n' ..
      table.concat(data))
  else  -- too big to carry: receivers read it with XRANGE
    redis.call('PUBLISH', channel, 'n ' .. ep .. ' ' .. fmt(n) .. ' ' .. fmt(count))
  end
end
if mode == 'c' and pid ~= '' and has_seq then
  if not win or win.epoch ~= pep then win = {epoch = pep, entries = {}} end
  win.entries[#win.entries + 1] = {seq, n, count}
  while #win.entries > PRODUCER_WINDOW do table.remove(win.entries, 1) end
  redis.call('HSET', m, 'p:' .. pid, format_window(win))
end
local now_closed = 0
if ARGV[12] ~= '' then
  redis.call('HSET', m, 'cl', ARGV[12], 'cat', now, 'acc', now)
  redis.call('ZREM', openk, sid)
  redis.call('PUBLISH', channel, 'e ' .. ep .. ' ' .. fmt(n + count) .. ' ' .. ARGV[12])
  redis.call('PUBLISH', events, 'e ' .. origin .. ' ' .. sid)
  now_closed = 1
end
-- retention: only a stream that has (or had) a deadline needs it moved
if h[6] or h[7] or h[8] or (now_closed == 1 and default_ttl ~= '') then
  schedule(m, d, dl, sid, default_ttl, grace)
end
return {'ok', fmt(n), fmt(count), fmt(n + count), ep, now_closed}
