-- route_calls for a whole batch (store::engine::route).
-- ARGV[2] = number of requests, then per request: id, call, flags — three
-- characters '0' | '1': raise on a registration diff (graise), re-route on
-- running concurrency (reroute), cycle control —, `tc`: the task id, '#'
-- and 16 hex digits of the hash of the call's arguments (the call id cut
-- short; kept as the field `tc`, for the task and listings by call) and,
-- when the flags end with '+', 9 more fields: the call id, parent_inv,
-- parent_call, gkey, rkey, scheduled_at,
-- actor, registration scope ('a' active, 'c<ttl_us>' cached), rerun_of
-- ('' = none). A plain call is four arguments. The flags end with '+k'
-- when the caller chose the id: if that invocation exists, it is reused
-- (the same call routed again, e.g. a trigger's firing).
-- Registration concurrency reuses (never for a rerun) a REGISTERED
-- invocation of the key, then for scope active or cached the oldest
-- active one (`gact:{key}`), then for scope cached the newest SUCCESS that
-- ended within the ttl (`gok:{key}`).
-- Returns {now, outcome...}; outcome = 'N' (new, created now), {'N', id,
-- created} (new, found by a replay) or {'R', same_call 0/1, record...}.
-- Failures: CYCLE (request index, number n of ancestor calls, the calls of
-- the calling invocation and its ancestors — n JSON calls, nearest first —
-- then the call ids of the cycle), REG_CONFLICT, NOT_FOUND.

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
      for _, nx in ipairs(rcall('HKEYS', k('edges', node))) do
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

-- request `i`, made by invocation `pinv` (call `parent_call`), calls
-- `callee`: a CYCLE failure when the callee's callees lead back to the
-- caller; the failure carries the calls of the caller and its ancestors,
-- which name the calls of the cycle by task and arguments
local function check_cycle(i, pinv, parent_call, callee)
  local path
  if parent_call == callee then
    path = {callee}
  else
    path = find_path(callee, parent_call)
  end
  if not path then
    return
  end
  local calls = {}
  local inv = pinv
  while inv and #calls < ANCESTORS_SEARCHED do
    local h = rcall('HMGET', k('inv', inv), 'call', 'parent')
    if not h[1] then
      break
    end
    calls[#calls + 1] = h[1]
    inv = nz(h[2])
  end
  local out = {'CYCLE', tostring(i), tostring(#calls)}
  for _, c in ipairs(calls) do
    out[#out + 1] = c
  end
  out[#out + 1] = parent_call
  for _, c in ipairs(path) do
    out[#out + 1] = c
  end
  fail(unpack(out))
end

-- the keys `par:{parent}` of this call, by parent
local PAR_KEYS

-- the flags of a request, read once per distinct text (a handful) and kept
-- between calls: {graise, reroute, cycle, full request ('+'), caller-chosen id ('k')}
local FLAGS = {}
local function flags_of(text)
  local f = FLAGS[text]
  if not f then
    f = {string.sub(text, 1, 1), string.sub(text, 2, 2), string.sub(text, 3, 3), string.sub(text, 4, 4) == '+',
      string.sub(text, 5, 5) == 'k'}
    if #text <= 5 then
      FLAGS[text] = f
    end
  end
  return f
end

-- request `i` (0-based), whose fields follow ARGV[b]; returns its outcome
-- and the index of its last field
local function route_one(i, b)
  local a = ARGV
  local id, call, flags, tc = a[b + 1], a[b + 2], a[b + 3], a[b + 4]
  local fl = flags_of(flags)
  local graise, reroute, cycle = fl[1], fl[2], fl[3]
  local task = string.sub(tc, 1, #tc - 17)
  local call_id = nil
  local pinv, pcall_id, gkey, rkey, sched, actor, gscope, rerun = nil, nil, nil, nil, nil, '', nil, nil
  local last = b + 4
  if fl[4] then
    pinv, pcall_id, gkey, rkey, sched, actor, gscope, rerun =
      nz(a[b + 6]), nz(a[b + 7]), nz(a[b + 8]), nz(a[b + 9]), nz(a[b + 10]), a[b + 11], nz(a[b + 12]), nz(a[b + 13])
    last = b + 13
    -- cycle control and registration concurrency compare call ids
    call_id = a[b + 5]
  end
  -- a caller-chosen id that exists is reused (also on a replay: another
  -- caller may have made it)
  if fl[5] and rcall('EXISTS', k('inv', id)) == 1 then
    local out = {'R', 1}
    for _, v in ipairs(record(id)) do
      out[#out + 1] = v
    end
    return out, last
  end
  if REPLAY then
    local created = rcall('HGET', k('inv', id), 'created')
    if created then
      -- created by the first attempt of this very call
      return {'N', id, created}, last
    end
  end
  if cycle == '1' and pcall_id then
    check_cycle(i, pinv, pcall_id, call_id)
  end
  if gkey and not rerun then
    local existing = rcall('ZRANGE', k('reg', gkey), 0, 0)[1]
    if not existing and gscope then
      existing = rcall('ZRANGE', k('gact', gkey), 0, 0)[1]
      if not existing and string.sub(gscope, 1, 1) == 'c' then
        local since = NOW - (tonumber(string.sub(gscope, 2)) or 0)
        existing = rcall('ZREVRANGEBYSCORE', k('gok', gkey), '+inf', fmt(since), 'LIMIT', 0, 1)[1]
      end
    end
    if existing then
      local same = rcall('HGET', k('inv', existing), 'call_id') == call_id
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
      return out, last
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
  -- the record, its status and its first history entry in one write: the
  -- fields every record has, then those of the request (`f`)
  local f = EMPTY
  if pinv or gkey or graise == '1' or rkey or reroute == '1' or sched or gscope or rerun then
    f = {}
  end
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
  if gscope then
    f[#f + 1], f[#f + 2] = 'gscope', gscope
  end
  if rerun then
    f[#f + 1], f[#f + 2] = 'rerun', rerun
  end
  if gkey or rkey or rerun or pinv or sched or graise == '1' then
    -- transitions read the rarer fields only when this flag says so
    f[#f + 1], f[#f + 2] = 'x', '1'
  end
  rcall('HSET', key, 'call', call, 'created', NOW_S, 'status', status, 'hn', '1', 'h1',
    entry(status, false, actor, false), 'tc', tc, unpack(f))
  if status == ST.SCHEDULED then
    rcall('ZADD', P .. 'scheduled', sched, id)
  elseif gkey then
    rcall('ZADD', k('reg', gkey), NOW_S, id)
    rcall('ZADD', k('gact', gkey), 0, id)
  end
  -- the query indexes (written by `flush`, one command per key)
  move_later(task, BAND_ARG[status], id)
  if pinv then
    local pk = PAR_KEYS[pinv]
    if not pk then
      pk = k('par', pinv)
      PAR_KEYS[pinv] = pk
    end
    zadd_later(pk, id)
  end
  -- (the set `tasks` learns the task with its first totals: see `flush`)
  add_total(task, TOT_ROUTED)
  if status == ST.REGISTERED then
    enqueue(id)
  end
  if pinv and pcall_id then
    add_edge(pinv, pcall_id, call_id)
  end
  return 'N', last
end

local function main()
  PAR_KEYS = {}
  local n = tonumber(ARGV[2])
  local out = {NOW_S}
  local b = 2
  for i = 0, n - 1 do
    out[#out + 1], b = route_one(i, b)
  end
  return out
end
