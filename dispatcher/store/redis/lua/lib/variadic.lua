-- Prepended to every script of lua/ by scripts.py.
--
-- Each redis.call from Lua has a cost of its own (tens of microseconds in the
-- embedded emulation), so the scripts write many members with one variadic
-- call. Lua's unpack is bounded by its stack: at most CHUNK arguments per call.
local CHUNK = 2000

-- redis.call(cmd, key, args...) in chunks of CHUNK arguments; the sum of the
-- replies (counts, for the commands called this way).
local function call_chunked(cmd, key, args)
  local total = 0
  for i = 1, #args, CHUNK do
    total = total + redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
  return total
end

-- (member, score) pairs, as the scripts take them in ARGV, turned into ZADD's
-- (score, member) arguments.
local function scored_pairs(pairs)
  local scored = {}
  for i = 1, #pairs, 2 do
    scored[i] = tonumber(pairs[i + 1])
    scored[i + 1] = pairs[i]
  end
  return scored
end

