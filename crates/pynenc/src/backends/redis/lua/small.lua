-- Small steps that need the server clock or a notification.
-- ARGV[2] = operation:
--   'heartbeat' runner           records that the runner is alive now
--   'lease' name holder ttl_us   takes or renews a lease; 1 if held
--   'enqueue' id...              appends ids to the queue (broker)

local function main()
  local op = ARGV[2]
  if op == 'heartbeat' then
    redis.call('HSET', P .. 'heartbeats', ARGV[3], NOW_S)
    return 1
  elseif op == 'lease' then
    local lk = k('lease', ARGV[3])
    local holder = ARGV[4]
    local v = redis.call('HMGET', lk, 'holder', 'expires')
    local free = (not v[1]) or v[1] == holder or tonumber(v[2]) <= NOW
    if free then
      redis.call('HSET', lk, 'holder', holder, 'expires', fmt(NOW + tonumber(ARGV[5])))
      return 1
    end
    return 0
  elseif op == 'enqueue' then
    for i = 3, #ARGV do
      enqueue(ARGV[i])
    end
    return #ARGV - 2
  end
  fail('BAD_OP', op)
end
