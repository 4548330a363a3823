-- enqueue: index new jobs of one queue as ready or scheduled.
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] job -> concurrency key HASH
-- ARGV[1] now (ms), ARGV[2] wake channel, ARGV[3] start of the wake message ("T R "),
-- ARGV[4..] quadruples: job id, priority rank, run_at (ms), concurrency key ("" for none)
-- Returns the number of jobs made ready; publishes one wake-up if any, ending in
-- that number, so that each replica wakes as many waiters as there are jobs.
local now = tonumber(ARGV[1])
local ready = 0
for i = 4, #ARGV, 4 do
  local id, rank, run_at, ckey = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  if run_at <= now then
    redis.call('ZADD', KEYS[1], rank, id)
    ready = ready + 1
  else
    redis.call('ZADD', KEYS[2], run_at, id)
  end
  if ckey ~= '' then
    redis.call('HSET', KEYS[3], id, ckey)
  end
end
if ready > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3] .. ready)
end
return ready
