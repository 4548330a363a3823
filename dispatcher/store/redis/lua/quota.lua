-- quota: take n tokens from a namespace's enqueue-rate bucket, all or nothing.
-- KEYS[1] bucket HASH (tokens, ts)
-- ARGV[1] rate per second, ARGV[2] burst, ARGV[3] now (ms), ARGV[4] n
-- Returns 1 when granted, or the milliseconds until n tokens will be there.
local rate, burst, now, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if rate == nil or burst == nil or now == nil or n == nil or rate <= 0 then
  return redis.error_reply('ERR bad quota arguments')
end
local cap = math.max(burst, 1)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local last = tonumber(b[2]) or now
local tokens = math.min(cap, (tonumber(b[1]) or cap) + math.max(0, now - last) * rate / 1000)
if tokens < n then
  redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
  return -math.ceil((n - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens - n, 'ts', now)
return 1
