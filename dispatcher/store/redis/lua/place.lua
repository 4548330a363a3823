-- place: put jobs of one queue where their SQL state says they belong, and
-- nowhere else. Used for retries, expired leases, promotions, repairs and the
-- rebuild from SQL. Idempotent: placing twice is the same as once.
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] leased ZSET
-- ARGV[1] wake channel, ARGV[2] wake message (the queue ref),
-- ARGV[3..] triples: job id, where ("r" ready, "s" scheduled, "l" leased, "-" none), score
-- Returns the number of jobs made ready; publishes one wake-up if any.
local ready = 0
local targets = { r = 1, s = 2, l = 3 }
for i = 3, #ARGV, 3 do
  local id, where, score = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])

  local target = targets[where]
  for k = 1, 3 do
    if k ~= target then
      redis.call('ZREM', KEYS[k], id)
    end
  end
  if target ~= nil then
    redis.call('ZADD', KEYS[target], score, id)
    if target == 1 then
      ready = ready + 1
    end
  end
end
if ready > 0 then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return ready
