-- One chunk of auto_purge: deletes up to ARGV[3] final invocations that
-- became final more than ARGV[2] µs ago. Returns how many.

local function delete_invocation(id)
  local key = k('inv', id)
  local v = redis.call('HMGET', key, 'gkey', 'rkey')
  redis.call('ZREM', P .. 'finals', id)
  redis.call('ZREM', P .. 'owned', id)
  redis.call('ZREM', P .. 'scheduled', id)
  redis.call('ZREM', P .. 'blocking', id)
  if nz(v[1]) then
    redis.call('ZREM', k('reg', v[1]), id)
  end
  if nz(v[2]) then
    redis.call('SREM', k('run', v[2]), id)
  end
  remove_edges_of(id)
  redis.call('DEL', key, k('hist', id))
end

local function main()
  local before = NOW - tonumber(ARGV[2])
  local old = redis.call('ZRANGEBYSCORE', P .. 'finals', '-inf', '(' .. fmt(before), 'LIMIT', 0, tonumber(ARGV[3]))
  for _, id in ipairs(old) do
    delete_invocation(id)
  end
  return #old
end
