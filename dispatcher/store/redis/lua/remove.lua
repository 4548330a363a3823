-- remove: drop jobs of one queue from every index (they reached a terminal state).
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] leased ZSET
-- ARGV job ids
-- Returns the number of entries removed.
local removed = 0
for i = 1, #ARGV do
  removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  removed = removed + redis.call('ZREM', KEYS[2], ARGV[i])
  removed = removed + redis.call('ZREM', KEYS[3], ARGV[i])
end
return removed
