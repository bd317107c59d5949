-- get_invocations_to_run / get_invocations_to_start (store::engine::pick):
-- waited-on invocations first (oldest first), then the queue; running
-- concurrency; PENDING for the runner, and RUNNING too when starting.
-- ARGV[2] = runner id, ARGV[3] = max, ARGV[4] = pick token, ARGV[5] = '1' to
-- start, ARGV[6] = execution context of RUNNING ('' = none).
-- Returns {{record...}..., {corrupt keys}}.
--
-- The ids handed out are remembered per runner with the token, so a replay
-- after a lost reply returns the same invocations instead of claiming more.

local function main()
  local runner, max, token = ARGV[2], tonumber(ARGV[3]), ARGV[4]
  local start, ctx = ARGV[5] == '1', nz(ARGV[6])
  local last_key = k('lastpick', runner)
  local picked, corrupt, ids = {}, {}, {}
  if REPLAY then
    local last = redis.call('GET', last_key)
    if last and string.sub(last, 1, #token + 1) == token .. ' ' then
      for id in string.gmatch(string.sub(last, #token + 2), '%S+') do
        local v = redis.call('HMGET', k('inv', id), 'status', 'owner')
        if v[2] == runner and OWNED_RUNNING[v[1]] then
          picked[#picked + 1] = record(id)
        end
      end
      return {picked, corrupt}
    end
  end
  if max <= 0 then
    return {picked, corrupt}
  end
  local function try_claim(id)
    local rec = read(id, true)
    if not rec then
      return -- purged while queued: a stale id
    end
    if not ST[rec.status] then
      corrupt[#corrupt + 1] = rec.key
      return
    end
    if not AVAILABLE[rec.status] then
      return
    end
    if rec.rkey and redis.call('SCARD', k('run', rec.rkey)) > 0 then
      if rec.reroute then
        apply(rec, ST.CONCURRENCY_CONTROLLED, runner, false)
        redis.call('RPUSH', k('ctl', rec.rkey), id)
      else
        apply(rec, ST.CONCURRENCY_CONTROLLED_FINAL, runner, false)
      end
      return
    end
    apply(rec, ST.PENDING, runner, false)
    if start then
      apply(rec, ST.RUNNING, runner, ctx or false)
    end
    ids[#ids + 1] = id
    picked[#picked + 1] = rec.record
  end
  local cands = redis.call('ZRANGE', P .. 'blocking', 0, fmt(max - 1))
  while true do
    for _, id in ipairs(cands) do
      if #ids >= max then
        break
      end
      try_claim(id)
    end
    if #ids >= max then
      break
    end
    cands = redis.call('LPOP', P .. 'queue', fmt(max - #ids))
    if not cands then
      break
    end
  end
  if #ids > 0 then
    redis.call('SET', last_key, token .. ' ' .. table.concat(ids, ' '), 'EX', 600)
  end
  return {picked, corrupt}
end
