-- extend: move the expiry of leases that are still indexed.
-- KEYS[1] leased ZSET
-- ARGV pairs: job id, new expiry (ms)
-- Returns the number of entries updated. XX: a lease removed meanwhile (acked,
-- reaped) is not brought back; a missing entry is repaired by the reconciler.
-- One variadic ZADD per 1,000 leases, not one call per lease (lib/variadic.lua;
-- `call_chunked` takes no options, hence the loop here).
local scored = scored_pairs(ARGV)
local changed = 0
for i = 1, #scored, CHUNK do
  changed = changed + redis.call('ZADD', KEYS[1], 'XX', 'CH', unpack(scored, i, math.min(i + CHUNK - 1, #scored)))
end
return changed
