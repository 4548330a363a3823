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
--
-- Jobs without a concurrency key are written with a few variadic calls for all
-- of them (`call_chunked`, from lib/variadic.lua); jobs with one, whose counts depend on what each call
-- removed, go one by one, and so does every job of a call that names an id twice
-- (one by one, the last entry wins).
local ready = 0
local targets = { r = 1, s = 2, l = 3 }

local function place_one(id, where, score, ckey)
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

local seen, plain, one_by_one, repeated = {}, {}, {}, false
for i = 3, #ARGV, 4 do
  repeated = repeated or seen[ARGV[i]] ~= nil
  seen[ARGV[i]] = true
  if ARGV[i + 3] == '' then
    plain[#plain + 1] = i
  else
    one_by_one[#one_by_one + 1] = i
  end
end
if repeated then
  plain, one_by_one = {}, {}
  for i = 3, #ARGV, 4 do
    one_by_one[#one_by_one + 1] = i
  end
end

local removed, added, unkeyed = { {}, {}, {} }, { {}, {}, {} }, {}
for _, i in ipairs(plain) do
  local id, target = ARGV[i], targets[ARGV[i + 1]]
  for k = 1, 3 do
    if k ~= target then
      removed[k][#removed[k] + 1] = id
    end
  end
  if target ~= nil then
    local into = added[target]
    into[#into + 1] = tonumber(ARGV[i + 2])
    into[#into + 1] = id
    if target == 1 then
      ready = ready + 1
    end
  end
  unkeyed[#unkeyed + 1] = id
end
for k = 1, 3 do
  call_chunked('ZREM', KEYS[k], removed[k])
  call_chunked('ZADD', KEYS[k], added[k])
end
call_chunked('HDEL', KEYS[4], unkeyed)

for _, i in ipairs(one_by_one) do
  place_one(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3])
end
if ready > 0 then
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return ready
