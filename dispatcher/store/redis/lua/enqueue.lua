-- enqueue: index new jobs of one queue as ready or scheduled, and announce them.
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] job -> concurrency key HASH
-- ARGV[1] wake channel, ARGV[2] start of the wake message ("T R "),
-- ARGV[3] the jobs, one line each: job id, where ("r" ready, "s" scheduled), score
-- (priority rank, or run_at in ms), version, concurrency key ("" for none),
-- separated by tabs (a concurrency key is printable ASCII: no tab, no newline).
-- One argument, not five per job: redis-py packs each argument in Python (2.6 µs
-- per job, microbenchmark).
-- ARGV[4] the updates channel, ARGV[5] the namespace and queue as a notice
-- carries them ('"ns","queue",': names need no JSON escaping).
-- Where a job goes is its SQL state's place (index.placement), decided by the
-- caller: a write made after the call answered may carry jobs of several calls,
-- each ready or not as of its own.
-- Returns the number of jobs made ready; publishes one wake-up if any, ending in
-- that number, so that each replica wakes as many waiters as there are jobs.
-- Publishes the jobs' update notices (as index.py's `_notify` does: a JSON list
-- of [job id, namespace, queue, version]) only while a replica follows the
-- updates channel: without a follower nothing is encoded or sent. A follower
-- counts once Redis has confirmed its subscription, which it waits for before
-- it reads the job's state (updates.py), so it misses no notice.
-- Each set is written in one variadic call per 1,000 jobs (`call_chunked`, from
-- lib/variadic.lua), not one call per job.

local ready = 0
local sets = { r = {}, s = {} }
local ckeys = {}
local announced = redis.call('PUBSUB', 'NUMSUB', ARGV[4])[2] > 0
local notices = {}
local pattern = '([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\n]*)\n'
for id, where, score, version, ckey in string.gmatch(ARGV[3], pattern) do
  local scored = sets[where == 'r' and 'r' or 's']
  scored[#scored + 1] = tonumber(score)
  scored[#scored + 1] = id
  if where == 'r' then
    ready = ready + 1
  end
  if ckey ~= '' then
    ckeys[#ckeys + 1] = id
    ckeys[#ckeys + 1] = ckey
  end
  if announced then
    notices[#notices + 1] = '["' .. id .. '",' .. ARGV[5] .. version .. ']'
  end
end
call_chunked('ZADD', KEYS[1], sets.r)
call_chunked('ZADD', KEYS[2], sets.s)
call_chunked('HSET', KEYS[3], ckeys)
if ready > 0 then
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ready)
end
if #notices > 0 then
  redis.call('PUBLISH', ARGV[4], '[' .. table.concat(notices, ',') .. ']')
end
return ready
