-- hand_off: record new jobs of one queue as leased to waiting Lease calls, before
-- their insert commits. Nothing is recorded while the queue is paused or has a
-- concurrency or rate limit: those jobs take the general path (enqueue, then a
-- lease through lease.lua, which applies them).
-- KEYS[1] leased ZSET, KEYS[2] paused flag STRING, KEYS[3] limits HASH
-- ARGV pairs: job id, lease expiry (ms)
-- Returns 1 if every job was recorded, 0 if none was.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
local lim = redis.call('HMGET', KEYS[3], 'max_concurrency', 'rate', 'key_max_concurrency', 'key_rate')
for _, v in ipairs(lim) do
  if (tonumber(v) or 0) > 0 then
    return 0
  end
end
-- One variadic ZADD per 1,000 jobs (score, member pairs), not one call per job.
local scored = {}
for i = 1, #ARGV, 2 do
  scored[i] = tonumber(ARGV[i + 1])
  scored[i + 1] = ARGV[i]
end
for i = 1, #scored, 2000 do
  redis.call('ZADD', KEYS[1], unpack(scored, i, math.min(i + 1999, #scored)))
end
return 1
