-- lease: take up to n ready jobs of one queue, best first, within the queue's
-- limits, and record a provisional lease for each. SQL confirms or rejects it.
-- KEYS[1] ready ZSET, KEYS[2] leased ZSET, KEYS[3] paused flag STRING,
-- KEYS[4] limits HASH (max_concurrency, rate, burst, key_max_concurrency, key_rate, key_burst),
-- KEYS[5] queue rate bucket HASH (tokens, ts), KEYS[6] job -> concurrency key HASH,
-- KEYS[7] concurrency key -> leased count HASH, KEYS[8] key -> bucket tokens HASH,
-- KEYS[9] key -> bucket refill time HASH
-- ARGV[1] n (1..1000), ARGV[2] lease expiry (ms), ARGV[3] now (ms)
-- Returns the job ids taken, best first: none while paused or at a queue limit.
-- Jobs whose concurrency key is at its limit are skipped, looking at most
-- 10 * n + 50 ready jobs deep.
local n, expire, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if n == nil or n < 1 or n > 1000 or expire == nil or now == nil then
  return redis.error_reply('ERR bad lease arguments')
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {}
end
local lim = redis.call('HMGET', KEYS[4], 'max_concurrency', 'rate', 'burst',
  'key_max_concurrency', 'key_rate', 'key_burst')
local max_conc, rate, burst = tonumber(lim[1]) or 0, tonumber(lim[2]) or 0, tonumber(lim[3]) or 0
local key_max, key_rate, key_burst = tonumber(lim[4]) or 0, tonumber(lim[5]) or 0, tonumber(lim[6]) or 0

if max_conc > 0 then
  n = math.min(n, max_conc - redis.call('ZCARD', KEYS[2]))
end
local tokens = 0
if rate > 0 then
  local b = redis.call('HMGET', KEYS[5], 'tokens', 'ts')
  local last = tonumber(b[2]) or now
  tokens = math.min(math.max(burst, 1), (tonumber(b[1]) or burst) + math.max(0, now - last) * rate / 1000)
  n = math.min(n, math.floor(tokens))
end
if n <= 0 then
  return {}
end

if redis.call('HLEN', KEYS[6]) == 0 then
  -- No job of this queue has a concurrency key: the first n ready jobs, taken and
  -- moved in three calls in all instead of three per job (each call from Lua has
  -- a cost of its own, tens of microseconds in the embedded emulation).
  -- n <= 1000 fits one unpack.
  local taken = redis.call('ZRANGE', KEYS[1], 0, n - 1)
  if #taken > 0 then
    local scored = {}
    for i, id in ipairs(taken) do
      scored[2 * i - 1] = expire
      scored[2 * i] = id
    end
    redis.call('ZREM', KEYS[1], unpack(taken))
    redis.call('ZADD', KEYS[2], unpack(scored))
  end
  if rate > 0 then
    redis.call('HSET', KEYS[5], 'tokens', tokens - #taken, 'ts', now)
  end
  return taken
end

local function key_allows(ckey)
  if key_max > 0 and (tonumber(redis.call('HGET', KEYS[7], ckey)) or 0) >= key_max then
    return false
  end
  if key_rate > 0 then
    local last = tonumber(redis.call('HGET', KEYS[9], ckey)) or now
    local t = tonumber(redis.call('HGET', KEYS[8], ckey)) or math.max(key_burst, 1)
    t = math.min(math.max(key_burst, 1), t + math.max(0, now - last) * key_rate / 1000)
    if t < 1 then
      return false
    end
    redis.call('HSET', KEYS[8], ckey, t - 1)
    redis.call('HSET', KEYS[9], ckey, now)
  end
  return true
end

local ids = {}
local window = redis.call('ZRANGE', KEYS[1], 0, 10 * n + 49)
for _, id in ipairs(window) do
  if #ids >= n then
    break
  end
  local ckey = redis.call('HGET', KEYS[6], id)
  if not ckey or key_allows(ckey) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], expire, id)
    if ckey then
      redis.call('HINCRBY', KEYS[7], ckey, 1)
    end
    ids[#ids + 1] = id
  end
end
if rate > 0 then
  redis.call('HSET', KEYS[5], 'tokens', tokens - #ids, 'ts', now)
end
return ids
