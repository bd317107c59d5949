-- Small steps that need the server clock or a notification.
-- ARGV[2] = operation:
--   'heartbeat' runner           records that the runner is alive now
--   'runner' runner info         records what the runner says of itself
--                                (`runners`: RunnerInfo JSON; the list
--                                shows the heartbeat of `heartbeats`) and
--                                that it is alive now
--   'lease' name holder ttl_us   takes or renews a lease; 1 if held
--   'history' id                 the history entries of an invocation in
--                                order, or 0 when it does not exist
--   'waiting' ttl_us             the calling backend waits for results for
--                                the next ttl: ends made by other backends
--                                are published (hash `waiters`)
--   'watch' id delta             one wait more (delta 1) or less (-1) for
--                                the next status of an invocation (field
--                                `sw`: while set, each status change is
--                                published on `status`); the status, or 0
--                                when the invocation does not exist
--   'reuse' n (id note)...       one more reuse of each existing id
--                                (field `rn`: the total), its note among
--                                the latest REUSES_KEPT (`reuse:{id}`)
--   'reuses' id                  {total, note...} of an invocation's
--                                reuses, oldest note first (0 when none)
--   'wfput' id key value '1'|'0' sets `key` of the workflow's data
--                                (`wfd:{id}`; with '1' only when unset)
--                                and returns the value it holds after;
--                                fails NOT_FOUND for an unknown id

local function main()
  local op = ARGV[2]
  if op == 'heartbeat' then
    rcall('HSET', P .. 'heartbeats', ARGV[3], NOW_S)
    return 1
  elseif op == 'runner' then
    rcall('HSET', P .. 'runners', ARGV[3], ARGV[4])
    rcall('HSET', P .. 'heartbeats', ARGV[3], NOW_S)
    return 1
  elseif op == 'lease' then
    local lk = k('lease', ARGV[3])
    local holder = ARGV[4]
    local v = rcall('HMGET', lk, 'holder', 'expires')
    local free = (not v[1]) or v[1] == holder or tonumber(v[2]) <= NOW
    if free then
      rcall('HSET', lk, 'holder', holder, 'expires', fmt(NOW + tonumber(ARGV[5])))
      return 1
    end
    return 0
  elseif op == 'waiting' then
    rcall('HSET', P .. 'waiters', ME, fmt(NOW + tonumber(ARGV[3])))
    return 1
  elseif op == 'watch' then
    local key = k('inv', ARGV[3])
    local status = rcall('HGET', key, 'status')
    if not status then
      return 0
    end
    if rcall('HINCRBY', key, 'sw', tonumber(ARGV[4])) <= 0 then
      rcall('HDEL', key, 'sw')
    else
      -- `x`: the rarer fields (`sw` among them) are read by transitions
      rcall('HSET', key, 'x', '1')
    end
    return status
  elseif op == 'reuse' then
    for i = 4, 3 + 2 * tonumber(ARGV[3]), 2 do
      local key = k('inv', ARGV[i])
      if rcall('EXISTS', key) == 1 then
        rcall('HINCRBY', key, 'rn', 1)
        local lk = k('reuse', ARGV[i])
        rcall('RPUSH', lk, ARGV[i + 1])
        rcall('LTRIM', lk, -REUSES_KEPT, -1)
      end
    end
    return 1
  elseif op == 'wfput' then
    local id, key, value = ARGV[3], ARGV[4], ARGV[5]
    local ik = k('inv', id)
    if rcall('EXISTS', ik) == 0 then
      fail('NOT_FOUND', id, 'while writing its workflow data')
    end
    local dk = k('wfd', id)
    if ARGV[6] == '1' then
      if rcall('HSETNX', dk, key, value) == 0 then
        return rcall('HGET', dk, key)
      end
    else
      rcall('HSET', dk, key, value)
    end
    -- `wd`: the purge deletes the data with the invocation
    rcall('HSET', ik, 'wd', '1')
    return value
  elseif op == 'reuses' then
    local total = tonumber(rcall('HGET', k('inv', ARGV[3]), 'rn'))
    if not total then
      return 0
    end
    local out = rcall('LRANGE', k('reuse', ARGV[3]), 0, -1)
    table.insert(out, 1, total)
    return out
  elseif op == 'history' then
    local key = k('inv', ARGV[3])
    local v = rcall('HMGET', key, 'status', 'hn')
    if not v[1] then
      return 0
    end
    local n, out = tonumber(v[2]) or 0, {}
    for first = 1, n, 1000 do
      local fields = {}
      for i = first, math.min(n, first + 999) do
        fields[#fields + 1] = 'h' .. i
      end
      for _, e in ipairs(rcall('HMGET', key, unpack(fields))) do
        out[#out + 1] = e
      end
    end
    return out
  end
  fail('BAD_OP', op)
end
