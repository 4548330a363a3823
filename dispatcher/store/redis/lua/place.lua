-- place: put jobs of one queue where their SQL state says they belong, and
-- nowhere else. Used for retries, expired leases, promotions, repairs and the
-- rebuild from SQL. Idempotent: placing twice is the same as once. Keeps the
-- per-concurrency-key lease counts in step with the leased set.
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] leased ZSET,
-- KEYS[4] job -> concurrency key HASH, KEYS[5] concurrency key -> leased count HASH
-- ARGV[1] wake channel, ARGV[2] wake message (the queue ref),
-- ARGV[3..] quadruples: job id, where ("r" ready, "s" scheduled, "l" leased, "-" none),
--   score, concurrency key ("" for none)
-- Returns the number of jobs made ready; publishes one wake-up if any.
local ready = 0
local targets = { r = 1, s = 2, l = 3 }
for i = 3, #ARGV, 4 do
  local id, where, score, ckey = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local target = targets[where]
  local left_leased = 0
  for k = 1, 3 do
    if k ~= target then
      local n = redis.call('ZREM', KEYS[k], id)
      if k == 3 then
        left_leased = n
      end
    end
  end
  if target ~= nil then
    local added = redis.call('ZADD', KEYS[target], score, id)
    if target == 1 then
      ready = ready + 1
    end
    if target == 3 and added == 1 and ckey ~= '' then
      redis.call('HINCRBY', KEYS[5], ckey, 1)
    end
  end
  if left_leased == 1 and ckey ~= '' then
    if redis.call('HINCRBY', KEYS[5], ckey, -1) <= 0 then
      redis.call('HDEL', KEYS[5], ckey)
    end
  end
  if target ~= nil and ckey ~= '' then
    redis.call('HSET', KEYS[4], id, ckey)
  else
    redis.call('HDEL', KEYS[4], id)
  end
end
if ready > 0 then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return ready
