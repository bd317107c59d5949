-- get_invocations_to_run (store::engine::pick): waited-on invocations first
-- (oldest first), then the queue; running concurrency; PENDING for the runner.
-- ARGV[2] = runner id, ARGV[3] = max. Returns {{record...}..., {corrupt keys}}.

local function main()
  local runner, max = ARGV[2], tonumber(ARGV[3])
  local picked, corrupt = {}, {}
  if max <= 0 then
    return {picked, corrupt}
  end
  local function try_claim(id)
    local key = k('inv', id)
    local v = redis.call('HMGET', key, 'status', 'rkey', 'reroute')
    local st = v[1]
    if not st then
      return -- purged while queued: a stale id
    end
    if not ALLOWED[st] then
      corrupt[#corrupt + 1] = key
      return
    end
    if not AVAILABLE[st] then
      return
    end
    local rkey = nz(v[2])
    if rkey and redis.call('SCARD', k('run', rkey)) > 0 then
      if v[3] == '1' then
        transition(id, ST.CONCURRENCY_CONTROLLED, runner, false)
        redis.call('RPUSH', k('ctl', rkey), id)
      else
        transition(id, ST.CONCURRENCY_CONTROLLED_FINAL, runner, false)
      end
      return
    end
    transition(id, ST.PENDING, runner, false)
    picked[#picked + 1] = record(id)
  end
  local cands = redis.call('ZRANGE', P .. 'blocking', 0, fmt(max - 1))
  while true do
    for _, id in ipairs(cands) do
      if #picked >= max then
        break
      end
      try_claim(id)
    end
    if #picked >= max then
      break
    end
    cands = redis.call('LPOP', P .. 'queue', fmt(max - #picked))
    if not cands then
      break
    end
  end
  return {picked, corrupt}
end
