-- The reads of the query API (store::QueryTxn), each from an index; none
-- reads every invocation. ARGV[2] = operation:
--   'list' ...            a page of invocations (see `list`)
--   'counts' n task...    {task, status, count}... per task and status
--                         (every task when n = 0); zero counts left out
--   'kinds' n task...     {task, kind, count}... of FAILED per error kind
--   'totals' n task...    {task, code, n}... of the task totals
--   'queue'               {depth, oldest id or false, its created or false}
--   'waits' id            {{waited...}, {waiters...}}, or 0 when it does
--                         not exist
--   'cancels' runner      the invocations the runner was asked to stop and
--                         still owns
--   'lease' name          {holder, expires} of the lease's last holder
--                         (expired or not), or 0

-- The fields of a listed invocation, ROW_LEN per row: id, task, (unused),
-- status, owner, parent, created,
-- retries, its last history field (the time of its status, see the
-- client) and its call (the client computes the call id from it).
local ROW_FIELDS = {'status', 'owner', 'created', 'parent', 'tc', 'retries', 'hn'}

-- How many queue entries `queue` reads looking for the first one still
-- waiting.
local QUEUE_SCAN = 10000

-- the task ids given from ARGV[i] (count, then ids), or every task
local function task_list(i)
  local n = tonumber(ARGV[i]) or 0
  if n == 0 then
    return rcall('SMEMBERS', P .. 'tasks'), i
  end
  local t = {}
  for j = 1, n do
    t[j] = ARGV[i + j]
  end
  return t, i + n
end

-- How many invocations the `owned` set may hold for a listing of owned
-- statuses to read it whole (and sort it) instead of a task's band 1.
local OWNED_READ = 10000

-- 'list': ARGV[3..] = order ('a' oldest first | 'd' newest first), after
-- (the cursor's id, '' = none), how many to return, the lowest and the
-- first excluded id of the created range ('' = open), created from / to
-- (µs, '' = open), ended from / to, parent, owner, the call's task and
-- hash, the scan budget, then the task ids (count first), the statuses
-- (count first) and the key arguments (count of pairs first, then name,
-- value...). Returns {rows, the last id scanned, 1 when nothing is left}.
--
-- It walks the smallest of the indexes the filters allow — the children
-- of the parent (`par:{parent}`), the invocations in owned statuses
-- (`owned`, read whole and sorted), the bands of the statuses asked for
-- in `idx:{task}` of the tasks asked for (or of the call's task, or of
-- every task) — several merged in id order, from the cursor in the
-- query's order, and checks every filter on each invocation. It stops at
-- the number asked for, at the end, or when it has scanned `budget`
-- entries: the client then continues after the last id scanned.
local function list()
  local a = ARGV
  local asc = a[3] == 'a'
  local after, want = nz(a[4]), tonumber(a[5])
  local lo, hi = nz(a[6]), nz(a[7])
  local cfrom, cto, efrom, eto = tonumber(a[8]), tonumber(a[9]), tonumber(a[10]), tonumber(a[11])
  local ended = efrom or eto
  local parent, owner, ctask, chash = nz(a[12]), nz(a[13]), nz(a[14]), nz(a[15])
  local budget = tonumber(a[16])
  local tasks, i = {}, 17
  local n = tonumber(a[i])
  for j = 1, n do
    tasks[j] = a[i + j]
  end
  i = i + n + 1
  local statuses, status_set = {}, nil
  n = tonumber(a[i])
  for j = 1, n do
    statuses[j] = a[i + j]
    status_set = status_set or {}
    status_set[a[i + j]] = true
  end
  i = i + n + 1
  local keyargs = {}
  n = tonumber(a[i])
  for j = 1, n do
    keyargs[j] = {a[i + 2 * j - 1], a[i + 2 * j]}
  end
  local task_set = nil
  for _, t in ipairs(tasks) do
    task_set = task_set or {}
    task_set[t] = true
  end
  if chash then
    if task_set and not task_set[ctask] then
      return {{}, '', 1}
    end
    -- a call belongs to one task
    tasks, task_set = {ctask}, {[ctask] = true}
  end

  -- The candidate indexes, each a list of sources with a size: a band of
  -- `idx:{task}` {kind = 'band', key, band}, a lex set {kind = 'lex',
  -- key} or ids read whole {kind = 'ids', ids (ascending)}.
  local groups = {}
  if parent then
    local key = k('par', parent)
    groups[#groups + 1] = {size = rcall('ZCARD', key), {kind = 'lex', key = key}}
  end
  local only_owned = #statuses > 0
  for _, st in ipairs(statuses) do
    only_owned = only_owned and OWNED_RUNNING[st] or false
  end
  if only_owned then
    local size = owned_count()
    if size <= OWNED_READ then
      local ids = owned_ids()
      table.sort(ids)
      groups[#groups + 1] = {size = size, {kind = 'ids', ids = ids}}
    end
  end
  local every = tasks
  if #every == 0 then
    every = rcall('SMEMBERS', P .. 'tasks')
  end
  local bands, last_band = {}, 0
  for _, st in ipairs(#statuses > 0 and statuses or ALL_ST) do
    -- only final invocations have ended
    if BAND[st] and (#statuses > 0 or not ended or FINAL[st]) then
      bands[BAND[st]] = true
      last_band = math.max(last_band, BAND[st])
    end
  end
  local g = {size = 0}
  for _, t in ipairs(every) do
    local key = tkey('idx', t)
    -- the band's ranks: members first .. first + n - 1 (bands in order)
    local first = 0
    for b = 1, last_band do
      local n = rcall('ZCOUNT', key, b, b)
      if n > 0 and bands[b] then
        g[#g + 1] = {kind = 'band', key = key, first = first, last = first + n - 1}
        g.size = g.size + n
      end
      first = first + n
    end
  end
  groups[#groups + 1] = g
  local srcs = groups[1]
  for _, gr in ipairs(groups) do
    if gr.size < srcs.size then
      srcs = gr
    end
  end

  local nsrc = #srcs
  local chunk = want
  if nsrc > 1 then
    chunk = math.min(want, math.max(16, math.ceil(2 * want / nsrc)))
  end
  chunk = math.max(1, math.min(chunk, 1000))

  -- whether `id` lies beyond `pos` in the walk's direction
  local function beyond(id, pos)
    if asc then
      return id > pos
    end
    return id < pos
  end
  -- the next ids of a source after its position `src.pos` (nil: from the
  -- start of the range), at most `chunk`
  local function fetch(src)
    local pos = src.pos
    local out = {}
    if src.kind == 'ids' then
      local ids = src.ids
      local from, to, step = 1, #ids, 1
      if not asc then
        from, to, step = #ids, 1, -1
      end
      for j = from, to, step do
        local id = ids[j]
        if (not pos or beyond(id, pos)) and #out < chunk then
          out[#out + 1] = id
        end
      end
      src.buf, src.i, src.done = out, 1, #out < chunk
      return
    end
    if src.kind == 'lex' then
      local min = lo and ('[' .. lo) or '-'
      local max = hi and ('(' .. hi) or '+'
      if pos and asc and (not lo or pos >= lo) then
        min = '(' .. pos
      elseif pos and not asc and (not hi or pos < hi) then
        max = '(' .. pos
      end
      local r
      if asc then
        r = rcall('ZRANGEBYLEX', src.key, min, max, 'LIMIT', 0, chunk)
      else
        r = rcall('ZREVRANGEBYLEX', src.key, max, min, 'LIMIT', 0, chunk)
      end
      src.buf, src.i, src.done = r, 1, #r < chunk
      return
    end
    -- a band: members ranked src.first .. src.last in id order; `cur` is
    -- the next rank to read
    local key = src.key
    if not src.cur then
      local function member(r)
        return rcall('ZRANGE', key, r, r)[1]
      end
      -- the first rank of the band whose member is >= id (or > id)
      local function rank_of(id, strictly)
        local r = rcall('ZRANK', key, id)
        if r and r >= src.first and r <= src.last then
          return strictly and r + 1 or r
        end
        local l, h = src.first, src.last + 1
        while l < h do
          local mid = math.floor((l + h) / 2)
          local m = member(mid)
          if m > id or (not strictly and m == id) then
            h = mid
          else
            l = mid + 1
          end
        end
        return l
      end
      local from, to = src.first, src.last
      if lo then
        from = rank_of(lo, false)
      end
      if hi then
        to = rank_of(hi, false) - 1
      end
      if pos and asc then
        from = math.max(from, rank_of(pos, true))
      elseif pos then
        to = math.min(to, rank_of(pos, false) - 1)
      end
      src.first, src.last = from, to
      src.cur = asc and from or to
    end
    local r1, r2
    if asc then
      r1, r2 = src.cur, math.min(src.cur + chunk - 1, src.last)
      src.cur = r2 + 1
    else
      r1, r2 = math.max(src.cur - chunk + 1, src.first), src.cur
      src.cur = r1 - 1
    end
    if r1 > r2 then
      src.buf, src.i, src.done = out, 1, true
      return
    end
    local r = rcall('ZRANGE', key, r1, r2)
    if asc then
      out = r
    else
      for j = #r, 1, -1 do
        out[#out + 1] = r[j]
      end
    end
    src.buf, src.i = out, 1
    src.done = (asc and src.cur > src.last) or (not asc and src.cur < src.first)
  end

  local rows = {}
  -- the row of `id` when it matches every filter
  local function check(id)
    if (lo and id < lo) or (hi and id >= hi) then
      return false
    end
    local key = k('inv', id)
    local v = rcall('HMGET', key, unpack(ROW_FIELDS))
    local st = v[1]
    if not st or (status_set and not status_set[st]) then
      return false
    end
    local tc = nz(v[5])
    local task = task_of({key = key, tc = tc})
    if task_set and not task_set[task] then
      return false
    end
    local created = tonumber(v[3])
    if (cfrom and not (created and created >= cfrom)) or (cto and not (created and created < cto)) then
      return false
    end
    local own = nz(v[2])
    if (parent and v[4] ~= parent) or (owner and own ~= owner) then
      return false
    end
    if chash and (task ~= ctask or string.sub(tc or '', -16) ~= string.sub(chash, 1, 16)) then
      return false
    end
    local hist = false
    local hn = tonumber(v[7])
    if hn and hn > 0 then
      hist = rcall('HGET', key, 'h' .. fmt(hn))
    end
    if ended then
      -- the time of the last history entry is when it became final
      if not FINAL[st] or not hist then
        return false
      end
      local ok, list = pcall(cjson.decode, '[' .. hist .. ']')
      local last = ok and type(list) == 'table' and list[#list]
      local e = type(last) == 'table' and tonumber(last[4])
      if not e or (efrom and e < efrom) or (eto and e >= eto) then
        return false
      end
    end
    -- the call: its id is computed by the client (which also checks the
    -- whole call id of a listing by call)
    local call = rcall('HGET', key, 'call')
    if #keyargs > 0 then
      local ok, c = pcall(cjson.decode, call or '')
      local args = ok and type(c) == 'table' and c.arguments
      if type(args) ~= 'table' then
        return false
      end
      for _, kv in ipairs(keyargs) do
        if args[kv[1]] ~= kv[2] then
          return false
        end
      end
    end
    local r = #rows
    rows[r + 1], rows[r + 2], rows[r + 3], rows[r + 4], rows[r + 5] = id, task, false, st, own or false
    rows[r + 6], rows[r + 7], rows[r + 8], rows[r + 9], rows[r + 10] =
      nz(v[4]) or false, v[3] or false, v[6] or false, hist, call
    return true
  end

  -- where the walk starts: after the cursor (the created range is checked
  -- on each id)
  for _, src in ipairs(srcs) do
    src.pos = after
    fetch(src)
  end
  local matched, scanned, last, exhausted = 0, 0, '', false
  while matched < want do
    if scanned >= budget then
      break
    end
    local best, bid = nil, nil
    local j = 1
    while j <= #srcs do
      local src = srcs[j]
      if src.i > #src.buf and not src.done then
        fetch(src)
      end
      local id = src.buf[src.i]
      if id then
        if not bid or beyond(bid, id) then
          best, bid = src, id
        end
        j = j + 1
      else
        -- this source is walked to its end
        table.remove(srcs, j)
      end
    end
    if not best then
      exhausted = true
      break
    end
    best.i = best.i + 1
    best.pos = bid
    scanned = scanned + 1
    if bid ~= last then
      last = bid
      if check(bid) then
        matched = matched + 1
      end
    end
    if (asc and hi and bid >= hi) or (not asc and lo and bid < lo) then
      -- past the created range
      exhausted = true
      break
    end
  end
  return {rows, last, exhausted and 1 or 0}
end

-- The invocations in PENDING, RUNNING, PAUSED or RESUMED (band 1 with
-- REGISTERED), counted per task and status from `owned` (what runners
-- hold: few), read once per call.
local HELD
local function held()
  if not HELD then
    HELD = {}
    for _, id in ipairs(owned_ids()) do
      local v = rcall('HMGET', k('inv', id), 'status', 'tc')
      if v[1] and BAND[v[1]] == 1 then
        local t = task_of({key = k('inv', id), tc = nz(v[2])})
        local c = HELD[t]
        if not c then
          c = {}
          HELD[t] = c
        end
        c[v[1]] = (c[v[1]] or 0) + 1
      end
    end
  end
  return HELD
end

-- the count of every status of `task`: a band's size, the held ones of
-- `owned`, REGISTERED the rest of band 1
local function counts_of(task)
  local key = tkey('idx', task)
  local out, in_band1 = {}, 0
  for st, c in pairs(held()[task] or {}) do
    out[st] = c
    in_band1 = in_band1 + c
  end
  for _, st in ipairs(ALL_ST) do
    local b = BAND[st]
    if st == ST.REGISTERED then
      out[st] = rcall('ZCOUNT', key, b, b) - in_band1
    elseif b ~= 1 then
      out[st] = rcall('ZCOUNT', key, b, b)
    end
  end
  return out
end

local function counts()
  local out = {}
  for _, t in ipairs((task_list(3))) do
    local c = counts_of(t)
    for _, st in ipairs(ALL_ST) do
      if (c[st] or 0) > 0 then
        out[#out + 1], out[#out + 2], out[#out + 3] = t, st, c[st]
      end
    end
  end
  return out
end

local function totals()
  local out = {}
  for _, t in ipairs((task_list(3))) do
    -- the hash and the entries not folded into it yet
    local sums = {}
    local h = rcall('HGETALL', tkey('tot', t))
    for j = 1, #h - 1, 2 do
      sums[h[j]] = (sums[h[j]] or 0) + (tonumber(h[j + 1]) or 0)
    end
    for code, n in pairs(pending_totals(t, sums)) do
      out[#out + 1], out[#out + 2], out[#out + 3] = t, code, n
    end
  end
  return out
end

local function kinds()
  local out = {}
  for _, t in ipairs((task_list(3))) do
    local h = rcall('HGETALL', tkey('fk', t))
    for j = 1, #h - 1, 2 do
      local c = tonumber(h[j + 1]) or 0
      if c > 0 then
        out[#out + 1], out[#out + 2], out[#out + 3] = t, h[j], c
      end
    end
  end
  return out
end

-- the queue's depth (from the counts) and its first invocation still
-- waiting to run (stale ids — picked, cancelled or deleted — skipped, up
-- to QUEUE_SCAN of them; the pick-ups drop them from the head)
local function queue()
  local depth = 0
  for _, t in ipairs(rcall('SMEMBERS', P .. 'tasks')) do
    local c = counts_of(t)
    for st in pairs(AVAILABLE) do
      depth = depth + (c[st] or 0)
    end
  end
  if depth == 0 then
    return {0, false, false}
  end
  local qk = P .. 'queue'
  for first = 0, QUEUE_SCAN - 1, 200 do
    local ids = rcall('LRANGE', qk, first, first + 199)
    for _, id in ipairs(ids) do
      local v = rcall('HMGET', k('inv', id), 'status', 'created')
      if v[1] and AVAILABLE[v[1]] then
        return {depth, id, v[2] or false}
      end
    end
    if #ids < 200 then
      break
    end
  end
  return {depth, false, false}
end

local function main()
  HELD = nil
  local op = ARGV[2]
  if op == 'list' then
    return list()
  elseif op == 'counts' then
    return counts()
  elseif op == 'kinds' then
    return kinds()
  elseif op == 'totals' then
    return totals()
  elseif op == 'queue' then
    return queue()
  elseif op == 'waits' then
    local id = ARGV[3]
    local v = rcall('HMGET', k('inv', id), 'status', 'waited')
    if not v[1] then
      return 0
    end
    -- a final invocation is waited by nobody (its waits were released)
    return {rcall('SMEMBERS', k('wo', id)), FINAL[v[1]] and {} or waiters_of(v[2])}
  elseif op == 'cancels' then
    local runner = ARGV[3]
    local out = {}
    for _, id in ipairs(rcall('SMEMBERS', k('cxl', runner))) do
      local v = rcall('HMGET', k('inv', id), 'status', 'owner')
      if v[2] == runner and OWNED_RUNNING[v[1]] then
        out[#out + 1] = id
      end
    end
    return out
  elseif op == 'lease' then
    -- held or expired: the expiry tells (as the other backends answer)
    local v = rcall('HMGET', k('lease', ARGV[3]), 'holder', 'expires')
    if v[1] then
      return {v[1], v[2]}
    end
    return 0
  end
  fail('BAD_OP', op)
end
