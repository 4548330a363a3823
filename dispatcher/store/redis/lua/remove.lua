-- remove: drop jobs of one queue from every index (they reached a terminal state,
-- or no longer exist), releasing their concurrency-key lease counts.
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] leased ZSET,
-- KEYS[4] job -> concurrency key HASH, KEYS[5] concurrency key -> leased count HASH
-- ARGV job ids
-- Returns the number of entries removed.
local removed = 0
for i = 1, #ARGV do
  local id = ARGV[i]
  removed = removed + redis.call('ZREM', KEYS[1], id)
  removed = removed + redis.call('ZREM', KEYS[2], id)
  local was_leased = redis.call('ZREM', KEYS[3], id)
  removed = removed + was_leased
  local ckey = redis.call('HGET', KEYS[4], id)
  if ckey then
    if was_leased == 1 and redis.call('HINCRBY', KEYS[5], ckey, -1) <= 0 then
      redis.call('HDEL', KEYS[5], ckey)
    end
    redis.call('HDEL', KEYS[4], id)
  end
end
return removed
