-- remove: drop jobs of one queue from every index (they reached a terminal state,
-- or no longer exist), releasing their concurrency-key lease counts.
-- KEYS[1] ready ZSET, KEYS[2] scheduled ZSET, KEYS[3] leased ZSET,
-- KEYS[4] job -> concurrency key HASH, KEYS[5] concurrency key -> leased count HASH
-- ARGV job ids
-- Returns the number of entries removed.
--
-- Jobs without a concurrency key leave each set in one variadic call per 1,000
-- jobs (each call from Lua has a cost of its own, tens of microseconds in the
-- embedded emulation); jobs with one, whose counts depend on what was removed,
-- go one by one.
local removed = 0

local function remove_keyed(id)
  removed = removed + redis.call('ZREM', KEYS[1], id)
  removed = removed + redis.call('ZREM', KEYS[2], id)
  local was_leased = redis.call('ZREM', KEYS[3], id)
  removed = removed + was_leased
  local ckey = redis.call('HGET', KEYS[4], id)
  if ckey then
    if was_leased == 1 and redis.call('HINCRBY', KEYS[5], ckey, -1) <= 0 then
      redis.call('HDEL', KEYS[5], ckey)
    end
    redis.call('HDEL', KEYS[4], id)
  end
end

for first = 1, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local ckeys = redis.call('HMGET', KEYS[4], unpack(ARGV, first, last))
  local plain = {}
  for i = first, last do
    if ckeys[i - first + 1] then
      remove_keyed(ARGV[i])
    else
      plain[#plain + 1] = ARGV[i]
    end
  end
  if #plain > 0 then
    for k = 1, 3 do
      removed = removed + redis.call('ZREM', KEYS[k], unpack(plain))
    end
  end
end
return removed
