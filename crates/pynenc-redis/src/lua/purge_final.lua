-- One chunk of auto_purge: deletes the final invocations that became final
-- more than ARGV[2] µs ago, entry by entry of the `finals` log ('time id
-- id ...', in time order), until at least ARGV[3] are deleted or an entry
-- is too recent. Returns how many.

local function delete_invocation(id)
  local key = k('inv', id)
  local v = redis.call('HMGET', key, 'gkey', 'rkey')
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
  return redis.call('DEL', key)
end

local function main()
  local before, want = NOW - tonumber(ARGV[2]), tonumber(ARGV[3])
  local fk = P .. 'finals'
  local deleted, used = 0, 0
  while deleted < want do
    local entries = redis.call('LRANGE', fk, used, used + 99)
    if #entries == 0 then
      break
    end
    local stop = false
    for _, e in ipairs(entries) do
      local sp = string.find(e, ' ', 1, true)
      local at = tonumber(sp and string.sub(e, 1, sp - 1) or e)
      if at and at >= before then
        stop = true
        break
      end
      if sp then
        for id in string.gmatch(string.sub(e, sp + 1), '%S+') do
          deleted = deleted + delete_invocation(id)
        end
      end
      used = used + 1
      if deleted >= want then
        break
      end
    end
    if stop then
      break
    end
  end
  if used > 0 then
    redis.call('LTRIM', fk, used, -1)
  end
  return deleted
end
