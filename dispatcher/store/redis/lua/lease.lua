-- lease: take up to n ready jobs of one queue, best first, and record a
-- provisional lease for each. SQL confirms or rejects it afterwards.
-- KEYS[1] ready ZSET, KEYS[2] leased ZSET, KEYS[3] paused flag (STRING, present = paused)
-- ARGV[1] n (1..1000), ARGV[2] lease expiry (ms)
-- Returns the job ids taken, best first; none while the queue is paused.
local n = tonumber(ARGV[1])
local expire = tonumber(ARGV[2])
if n == nil or n < 1 or n > 1000 or expire == nil then
  return redis.error_reply('ERR bad lease arguments')
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {}
end
local popped = redis.call('ZPOPMIN', KEYS[1], n)
local ids = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  redis.call('ZADD', KEYS[2], expire, id)
  ids[#ids + 1] = id
end
return ids
