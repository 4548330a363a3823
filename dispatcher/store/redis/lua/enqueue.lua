-- enqueue: index new jobs of one queue as ready or scheduled.
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] job -> concurrency key HASH
-- ARGV[1] wake channel, ARGV[2] start of the wake message ("T R "),
-- ARGV[3] the jobs, one line each: job id, where ("r" ready, "s" scheduled), score
-- (priority rank, or run_at in ms), concurrency key ("" for none), separated by tabs
-- (a concurrency key is printable ASCII: no tab, no newline). One argument, not four
-- per job: redis-py packs each argument in Python (2.6 µs per job, microbenchmark).
-- Where a job goes is its SQL state's place (index.placement), decided by the
-- caller: a write made after the call answered may carry jobs of several calls,
-- each ready or not as of its own.
-- Returns the number of jobs made ready; publishes one wake-up if any, ending in
-- that number, so that each replica wakes as many waiters as there are jobs.
local ready = 0
for id, where, score, ckey in string.gmatch(ARGV[3], '([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\n]*)\n') do
  if where == 'r' then
    redis.call('ZADD', KEYS[1], tonumber(score), id)
    ready = ready + 1
  else
    redis.call('ZADD', KEYS[2], tonumber(score), id)
  end
  if ckey ~= '' then
    redis.call('HSET', KEYS[3], id, ckey)
  end
end
if ready > 0 then
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ready)
end
return ready
