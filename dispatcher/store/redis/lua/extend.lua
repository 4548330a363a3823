-- extend: move the expiry of leases that are still indexed.
-- KEYS[1] leased ZSET
-- ARGV pairs: job id, new expiry (ms)
-- Returns the number of entries updated. XX: a lease removed meanwhile (acked,
-- reaped) is not brought back; a missing entry is repaired by the reconciler.
-- One variadic ZADD per 1,000 leases (score, member pairs), not one call per
-- lease: each call from Lua has a cost of its own.
local scored = {}
for i = 1, #ARGV, 2 do
  scored[i] = tonumber(ARGV[i + 1])
  scored[i + 1] = ARGV[i]
end
local changed = 0
for i = 1, #scored, 2000 do
  changed = changed + redis.call('ZADD', KEYS[1], 'XX', 'CH', unpack(scored, i, math.min(i + 1999, #scored)))
end
return changed
