-- route_calls for a whole batch (store::engine::route).
-- ARGV[2] = number of requests, then 12 fields per request:
-- id, call, call_id, parent_inv, parent_call, gkey, graise, rkey, reroute,
-- scheduled_at, cycle_control, actor ('' = none).
-- Returns {now, outcome...}; outcome = {'N', id, created} or
-- {'R', same_call 0/1, record...}. Failures: CYCLE, REG_CONFLICT, NOT_FOUND.

local function find_path(from, to)
  local stack = {{from, {from}}}
  local seen = {}
  while #stack > 0 do
    local top = table.remove(stack)
    local node, path = top[1], top[2]
    if node == to then
      return path
    end
    if not seen[node] then
      seen[node] = true
      for _, nx in ipairs(redis.call('HKEYS', k('edges', node))) do
        if not seen[nx] then
          local p = {}
          for j = 1, #path do
            p[j] = path[j]
          end
          p[#p + 1] = nx
          stack[#stack + 1] = {nx, p}
        end
      end
    end
  end
  return nil
end

local function check_cycle(parent_call, callee)
  if parent_call == callee then
    fail('CYCLE', parent_call, callee)
  end
  local path = find_path(callee, parent_call)
  if path then
    fail('CYCLE', parent_call, unpack(path))
  end
end

local function route_one(i, a)
  local id, call, call_id, pinv, pcall_id, gkey, graise, rkey, reroute, sched, cycle, actor =
    a[1], a[2], a[3], nz(a[4]), nz(a[5]), nz(a[6]), a[7], nz(a[8]), a[9], nz(a[10]), a[11], a[12]
  if REPLAY then
    local created = redis.call('HGET', k('inv', id), 'created')
    if created then
      -- created by the first attempt of this very call
      return {'N', id, created}
    end
  end
  if cycle == '1' and pcall_id then
    check_cycle(pcall_id, call_id)
  end
  if gkey then
    local existing = redis.call('ZRANGE', k('reg', gkey), 0, 0)[1]
    if existing then
      local same = redis.call('HGET', k('inv', existing), 'call_id') == call_id
      if not same and graise == '1' then
        fail('REG_CONFLICT', tostring(i), unpack(record(existing)))
      end
      if pinv and pcall_id then
        add_edge(pinv, pcall_id, call_id)
      end
      local out = {'R', same and 1 or 0}
      for _, v in ipairs(record(existing)) do
        out[#out + 1] = v
      end
      return out
    end
  end
  local status = ST.REGISTERED
  if sched and tonumber(sched) > NOW then
    status = ST.SCHEDULED
  end
  if not INITIAL[status] then
    fail('TRANSITION_NEW', id, status)
  end
  local key = k('inv', id)
  local f = {'call', call, 'created', NOW_S, 'status', status, 'status_at', NOW_S}
  if pinv then
    f[#f + 1] = 'parent'
    f[#f + 1] = pinv
  end
  if gkey then
    -- the call id tells a reused invocation's diff apart
    f[#f + 1], f[#f + 2], f[#f + 3], f[#f + 4] = 'gkey', gkey, 'call_id', call_id
  end
  if graise == '1' then
    f[#f + 1], f[#f + 2] = 'graise', graise
  end
  if rkey then
    f[#f + 1], f[#f + 2] = 'rkey', rkey
  end
  if reroute == '1' then
    f[#f + 1], f[#f + 2] = 'reroute', reroute
  end
  if sched then
    f[#f + 1], f[#f + 2] = 'sched', sched
  end
  redis.call('HSET', key, unpack(f))
  if status == ST.SCHEDULED then
    redis.call('ZADD', P .. 'scheduled', sched, id)
  elseif gkey then
    redis.call('ZADD', k('reg', gkey), NOW_S, id)
  end
  history(id, status, false, actor, false)
  if status == ST.REGISTERED then
    enqueue(id)
  end
  if pinv and pcall_id then
    add_edge(pinv, pcall_id, call_id)
  end
  return {'N', id, NOW_S}
end

local function main()
  local n = tonumber(ARGV[2])
  local out = {NOW_S}
  local F = 12
  for i = 0, n - 1 do
    local base = 2 + i * F
    local a = {}
    for j = 1, F do
      a[j] = ARGV[base + j]
    end
    out[#out + 1] = route_one(i, a)
  end
  return out
end
