-- hand_off: record new jobs of one queue as leased to waiting Lease calls, while
-- their insert (already LEASED) runs. Nothing is recorded while the queue is paused or has a
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
-- One variadic ZADD per 1,000 jobs, not one call per job (lib/variadic.lua).
call_chunked('ZADD', KEYS[1], scored_pairs(ARGV))
return 1
