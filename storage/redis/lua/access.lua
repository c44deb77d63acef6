-- Count an access (a read, a touch) for the idle TTL: the deadline moves with it.
-- KEYS: meta, data, deadlines    ARGV: 1 id, 2 now, 3 default ttl, 4 grace
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'acc', ARGV[2])
schedule(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[3], ARGV[4])
return 1
