-- extend: move the expiry of leases that are still indexed.
-- KEYS[1] leased ZSET
-- ARGV pairs: job id, new expiry (ms)
-- Returns the number of entries updated. XX: a lease removed meanwhile (acked,
-- reaped) is not brought back; a missing entry is repaired by the reconciler.
local changed = 0
for i = 1, #ARGV, 2 do
  changed = changed + redis.call('ZADD', KEYS[1], 'XX', 'CH', tonumber(ARGV[i + 1]), ARGV[i])
end
return changed
