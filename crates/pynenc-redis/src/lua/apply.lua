-- Status transitions and the end of every call (part of the library:
-- lib.lua, index.lua and apply.lua are loaded as one text, in this order):
-- `put_status` keeps every index in step with a status, `apply` is one
-- checked transition, `flush` writes what a call staged and `invoke` runs
-- a step.

-- writes a checked status (with an extra field, e.g. the result) and keeps
-- every index in step with it (the band of `idx:{task}` in `flush`)
local function put_status(rec, to, owner, efield, evalue)
  local id, old = rec.id, rec.status
  dirty(rec)
  if rec.sw then
    -- someone waits for its next status (`wait_status_change`)
    CHANGED[#CHANGED + 1] = id
  end
  if owner ~= rec.owner then
    rec.owner_changed = true
  end
  if efield then
    stage(rec, efield, evalue)
  end
  if TOT[to] then
    add_total(task_of(rec), TOT[to])
  end
  local was_owned, is_owned = OWNED_RUNNING[old] or false, OWNED_RUNNING[to] or false
  if is_owned or was_owned then
    -- `owned` is ordered by the time of the last status (written by `flush`)
    rec.owned = is_owned
  end
  local gkey = rec.gkey
  if gkey then
    if old == ST.REGISTERED and to ~= ST.REGISTERED then
      rcall('ZREM', k('reg', gkey), id)
    elseif to == ST.REGISTERED and old ~= ST.REGISTERED then
      rcall('ZADD', k('reg', gkey), rec.created, id)
    end
    local was_active, now_active = is_active(old), is_active(to)
    if was_active ~= now_active then
      if now_active then
        rcall('ZADD', k('gact', gkey), 0, id)
      else
        rcall('ZREM', k('gact', gkey), id)
      end
    end
    if to == ST.SUCCESS then
      -- registration scope `cached`: the successes of the key by end time
      rcall('ZADD', k('gok', gkey), NOW_S, id)
    end
  end
  if rec.rkey and was_owned ~= is_owned then
    if is_owned then
      rcall('SADD', k('run', rec.rkey), id)
    else
      rcall('SREM', k('run', rec.rkey), id)
    end
  end
  if old == ST.SCHEDULED and to ~= ST.SCHEDULED then
    rcall('ZREM', P .. 'scheduled', id)
  end
  if rec.waited then
    if AVAILABLE[to] and not AVAILABLE[old] then
      rcall('ZADD', P .. 'blocking', rec.created, id)
    elseif AVAILABLE[old] and not AVAILABLE[to] then
      rcall('ZREM', P .. 'blocking', id)
    end
  end
  if FINAL[to] then
    -- the log of ends per final status (auto purge)
    append_later(ENDS, to, id)
    if to == ST.FAILED then
      local kind = rec.ekind or stored_error_kind(rec)
      if kind then
        stage(rec, 'ekind', kind)
        hincr_later(tkey('fk', task_of(rec)), kind, 1)
      end
    end
    if rec.waited then
      -- the field stays (`waiters_of` of a final invocation is not asked)
      release_waits(id, rec.waited)
    end
    if rec.wo then
      release_own_waits(id)
      stage(rec, 'wo', '')
      rec.wo = nil
    end
    if rec.cxl then
      -- a cancel request lasts until the invocation is final
      rcall('SREM', k('cxl', rec.cxl), id)
      stage(rec, 'cxl', '')
      stage(rec, 'cxle', '')
      rec.cxl = nil
    end
  end
  rec.status = to
  rec.owner = owner
end

local function add_edge(parent_inv, parent_call, callee)
  rcall('HINCRBY', k('edges', parent_call), callee, 1)
  rcall('RPUSH', k('iedges', parent_inv), parent_call, callee)
  if NO_EDGES[parent_inv] ~= false then
    -- flag the caller so that removing its edges is free when it has none
    set_field(parent_inv, 'edges', '1', 'x', '1')
    NO_EDGES[parent_inv] = false
  end
end

-- removes the call edges an invocation added (`rec` = nil: look anyway)
local function remove_edges_of(id, rec)
  if NO_EDGES[id] or (rec and not rec.edges and NO_EDGES[id] == nil) then
    return
  end
  NO_EDGES[id] = true
  local ek = k('iedges', id)
  local list = rcall('LRANGE', ek, 0, -1)
  if #list == 0 then
    return
  end
  for i = 1, #list - 1, 2 do
    local hk = k('edges', list[i])
    if rcall('HINCRBY', hk, list[i + 1], -1) <= 0 then
      rcall('HDEL', hk, list[i + 1])
    end
  end
  rcall('DEL', ek)
end

-- One status transition (store::engine::transition) of a loaded record:
-- check, write, history, then what the new status implies.
local function apply(rec, to, actor, ctx, efield, evalue)
  local from = rec.status
  local owner = next_owner(rec, to, actor)
  put_status(rec, to, owner, efield, evalue)
  history(rec, to, owner, actor, ctx)
  if OWNED_RUNNING[from] and not OWNED_RUNNING[to] then
    -- the running key is free again: re-route what was parked on it
    if rec.rkey then
      local ck = k('ctl', rec.rkey)
      local parked = rcall('LRANGE', ck, 0, -1)
      if #parked > 0 then
        rcall('DEL', ck)
        for _, pid in ipairs(parked) do
          local prec = load(pid)
          if prec and ALLOWED[prec.status][ST.REROUTED] then
            apply(prec, ST.REROUTED, actor, false)
            enqueue(pid)
          end
        end
      end
    end
    remove_edges_of(rec.id, rec)
  end
  if FINAL[to] then
    -- the waits are over: a final invocation is never available, so it left
    -- `blocking` in put_status (`waited` keeps the last waiter for the record)
    remove_edges_of(rec.id, rec)
    FINALS[#FINALS + 1] = rec.id
  end
  return rec
end

-- load, then apply (NOT_FOUND when the invocation does not exist)
local function transition(id, to, actor, ctx, during)
  local rec = load(id)
  if not rec then
    fail('NOT_FOUND', id, during or ('while setting it ' .. to))
  end
  return apply(rec, to, actor, ctx)
end

-- After KILLED or a recovery status (store::engine::control): REROUTED at
-- the head of the queue, or CANCELLED with `cancelled` (the error JSON)
-- when a cancel was requested for the invocation.
local function reroute_unless_cancelled(rec, actor, cancelled)
  if rec.cxl then
    -- the error of the request names who asked for the cancel
    local asked = rcall('HGET', rec.key, 'cxle')
    apply(rec, ST.CANCELLED, actor, false, 'error', asked or cancelled)
  else
    apply(rec, ST.REROUTED, actor, false)
    enqueue_front(rec.id)
  end
end

-- the largest slice unpack() handles comfortably
local CHUNK = 4000

-- `cmd key a1 a2 ...` in slices of CHUNK arguments
local function call_chunked(cmd, key, list)
  for i = 1, #list, CHUNK do
    rcall(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

-- writes the staged fields and index changes (callable more than once
-- in a call: everything staged so far is written and forgotten)
local function flush()
  -- the changes to `owned`: members to add (score, id, ...) and to remove
  local add, rem
  for i = 1, #DIRTY do
    local rec = DIRTY[i]
    -- one HSET of the status, the staged fields and, when changed, the
    -- history and the owner (a released owner is written empty: reads treat
    -- '' as none); its arguments passed as they are, without a table
    local key, st, w, h = rec.key, rec.status, rec.w or EMPTY, rec.hist
    if h then
      local hn = rec.hn + 1
      rec.hn = hn
      local hf, hv, hnv = hname(hn), #h == 1 and h[1] or table.concat(h, ','), HNUM[hn] or ('' .. hn)
      if rec.owner_changed then
        rcall('HSET', key, 'status', st, hf, hv, 'hn', hnv, 'owner', rec.owner or '', unpack(w))
      else
        rcall('HSET', key, 'status', st, hf, hv, 'hn', hnv, unpack(w))
      end
    elseif rec.owner_changed then
      rcall('HSET', key, 'status', st, 'owner', rec.owner or '', unpack(w))
    else
      rcall('HSET', key, 'status', st, unpack(w))
    end
    rec.w, rec.dirty, rec.owner_changed, rec.hist = nil, nil, nil, nil
    local owned = rec.owned
    if owned then
      add = add or {'+inf', OWNED_KEEPER}
      add[#add + 1] = NOW_S
      add[#add + 1] = rec.id
    elseif owned == false then
      rem = rem or {}
      rem[#rem + 1] = rec.id
    end
    rec.owned = nil
    -- the band changes once per call
    local new = rec.status
    if BAND[new] ~= BAND[rec.st0] then
      local t = task_of(rec)
      move_later(t, BAND_ARG[new], rec.id)
      if not rec.tc then
        -- routed by a build before the indexes: it joins them now
        NEW_TASKS[t] = true
      end
    end
    rec.st0 = new
  end
  DIRTY = {}
  if add then
    call_chunked('ZADD', P .. 'owned', add)
  end
  if rem then
    call_chunked('ZREM', P .. 'owned', rem)
  end
  for key, l in pairs(ZREMS) do
    call_chunked('ZREM', key, l)
  end
  ZREMS = {}
  for key, l in pairs(SREMS) do
    call_chunked('SREM', key, l)
  end
  SREMS = {}
  for key, l in pairs(ZADDS) do
    call_chunked('ZADD', key, l)
  end
  ZADDS = {}
  for t, l in pairs(MOVES) do
    call_chunked('ZADD', P .. 'idx:' .. t, l)
  end
  MOVES = {}

  for key, h in pairs(HINCRS) do
    for field, by in pairs(h) do
      if by ~= 0 and rcall('HINCRBY', key, field, by) <= 0 then
        rcall('HDEL', key, field)
      end
    end
  end
  HINCRS = {}
  for task, t in pairs(TOTS) do
    local entry, n = {}, 0
    for code, by in pairs(t) do
      entry[n + 1], entry[n + 2] = code, fmt(by)
      n = n + 2
    end
    local pending = rcall('RPUSH', tkey('totl', task), table.concat(entry, ' '))
    if pending == 1 then
      -- the task's first totals, or the first since the last fold: a task
      -- with totals is in `tasks` (a purge removes it only when it has
      -- none), so only then may it be missing there
      NEW_TASKS[task] = true
    elseif pending >= TOTALS_FOLDED_AT then
      fold_totals(task)
    end
  end
  TOTS = {}
  local tasks = {}
  for t in pairs(NEW_TASKS) do
    tasks[#tasks + 1] = t
  end
  if #tasks > 0 then
    local added = 0
    for i = 1, #tasks, CHUNK do
      added = added + rcall('SADD', P .. 'tasks', unpack(tasks, i, math.min(i + CHUNK - 1, #tasks)))
    end
    if added > 0 then
      -- the app's first invocation of a task (after a purge too): the app
      -- is on this server, `{key_prefix}:apps` lists it (P is
      -- `{key_prefix}:{escaped app id}:`)
      local app = string.match(P, '([^:]*):$')
      rcall('SADD', string.sub(P, 1, #P - #app - 2) .. ':apps', app)
    end
    NEW_TASKS = {}
  end
  for st, ids in pairs(ENDS) do
    -- one entry per call and final status: 'time id id ...'
    rcall('RPUSH', P .. 'finals:' .. st, NOW_S .. ' ' .. table.concat(ids, ' '))
  end
  ENDS = {}
  if #QUEUE_HEAD > 0 then
    call_chunked('LPUSH', P .. 'queue', QUEUE_HEAD)
    QUEUE_HEAD = {}
  end
  if #QUEUE_TAIL > 0 then
    call_chunked('RPUSH', P .. 'queue', QUEUE_TAIL)
    QUEUE_TAIL = {}
  end
end

-- Records that `waiter_inv` (nil = an external caller) waits for `ids`
-- (field `waited`, and `blocking` while available; final ones ignored, a
-- missing one NOT_FOUND with nothing recorded) and, when `pause_by` (a
-- runner) is given, sets the waiter `PAUSED` by it in the same step, unless
-- every waited invocation is final already (nothing recorded then); a
-- pause that would be refused is refused before anything is written.
-- Returns the number of waited invocations not final
-- (store::engine::pause_for_results, waiting_for_results).
local function wait_for(waiter_inv, pause_by, ids)
  if REPLAY and pause_by then
    -- the first attempt's reply was lost: it is paused already
    local rec = load(waiter_inv, ALL)
    if rec and rec.status == ST.PAUSED and already_done(rec, ST.PAUSED, pause_by) then
      return 1
    end
  end
  local paused
  if pause_by then
    -- a waiting invocation most likely called what it waits for (`edges`)
    -- or waited before (`wo`): its rarer fields are read at once
    paused = load(waiter_inv, ALL)
    if not paused then
      fail('NOT_FOUND', waiter_inv, 'while pausing it to wait')
    end
    next_owner(paused, ST.PAUSED, pause_by)
  end
  local open = {}
  for i = 1, #ids do
    local id = ids[i]
    local key = k('inv', id)
    -- {status, created, waited}; a record this call changed is read as
    -- staged (an end earlier in the step made it final)
    local rec = RECS[id]
    local v
    if rec then
      v = {rec.status, rec.created or rcall('HGET', key, 'created'), rec.waited}
    else
      v = rcall('HMGET', key, 'status', 'created', 'waited')
    end
    if not v[1] then
      fail('NOT_FOUND', id, 'while registering a wait for it')
    end
    if not ST[v[1]] then
      fail('CORRUPT', key, 'status', v[1])
    end
    if not FINAL[v[1]] then
      v[4], v[5] = id, key
      open[#open + 1] = v
    end
  end
  -- the wait graph only links invocations that exist
  local graph = waiter_inv and #open > 0 and (RECS[waiter_inv] or rcall('HEXISTS', k('inv', waiter_inv), 'status') == 1)
  local linked = {}
  local token = graph and waiter_inv or '(external)'
  for _, v in ipairs(open) do
    local waited, id = v[3], v[4]
    local nv
    if not waited or waited == '-' then
      nv = token
    elseif waited ~= token and not string.find(' ' .. waited .. ' ', ' ' .. token .. ' ', 1, true) then
      nv = waited .. ' ' .. token
    end
    if nv then
      local rec = RECS[id]
      if rec then
        -- loaded by this call (its flush writes it)
        stage(rec, 'waited', nv)
        stage(rec, 'x', '1')
        rec.waited = nv
      elseif nv == token then
        rcall('HSET', v[5], 'waited', nv, 'x', '1')
      else
        rcall('HSET', v[5], 'waited', nv)
      end
    end
    if not waited and AVAILABLE[v[1]] then
      rcall('ZADD', P .. 'blocking', v[2], id)
    end
    if graph then
      linked[#linked + 1] = id
    end
  end
  if #linked > 0 then
    call_chunked('SADD', k('wo', waiter_inv), linked)
    local rec = RECS[waiter_inv]
    if not rec then
      rcall('HSET', k('inv', waiter_inv), 'wo', '1', 'x', '1')
    elseif not rec.wo then
      -- loaded by this call (a pause): written with its status
      stage(rec, 'wo', '1')
      stage(rec, 'x', '1')
      rec.wo = '1'
    end
  end
  if paused and #open > 0 then
    apply(paused, ST.PAUSED, pause_by, false)
  end
  return #open
end

-- Reads the outcomes of `ids` ({status, result, error} each, as this call
-- sees them: an end earlier in the step staged its status and result;
-- NOT_FOUND for a missing one, and with `final_only` STILL_WAITING for one
-- not final, before anything is written), then sets `id` to `to` by `actor`
-- (a checked transition; a replay finds its own effect). Returns the record
-- and the outcomes (store::engine::resume_with_outcomes, resume_when_final).
local function set_with_outcomes(id, to, actor, ctx, ids, final_only)
  local outcomes = {}
  for i = 1, #ids do
    local v = rcall('HMGET', k('inv', ids[i]), 'status', 'result', 'error')
    local rec = RECS[ids[i]]
    if rec then
      v[1] = rec.status
      local w = rec.w or EMPTY
      for j = 1, #w - 1, 2 do
        if w[j] == 'result' then
          v[2] = w[j + 1]
        elseif w[j] == 'error' then
          v[3] = w[j + 1]
        end
      end
    end
    if not v[1] then
      fail('NOT_FOUND', ids[i], 'while reading its result')
    end
    if final_only and not FINAL[v[1]] then
      fail('STILL_WAITING', id, ids[i])
    end
    outcomes[#outcomes + 1] = v
  end
  -- a resumed invocation has waited: its rarer fields are read at once
  local rec = load(id, to == ST.RESUMED and ALL or nil)
  if not rec then
    fail('NOT_FOUND', id, 'while setting it ' .. to)
  end
  if REPLAY and rec.status == to and already_done(rec, to, actor) then
    return rec, outcomes
  end
  return apply(rec, to, actor, ctx or false), outcomes
end

-- Runs `main` for one call (`keys`, `argv`: the script's KEYS and ARGV or
-- the function's arguments), writes what it staged, publishes the
-- notifications and shapes the reply:
-- {'OK'|'ERR', enqueued 0/1, {ids that became final}, result | failure}.
-- The ids that became final go out in one message, separated by spaces,
-- when a backend other than the caller waits for results (hash `waiters`:
-- backend id -> registration expiry, µs); the caller learns them from the
-- reply.
local function others_wait()
  local w = rcall('HGETALL', P .. 'waiters')
  local found = false
  for i = 1, #w - 1, 2 do
    if tonumber(w[i + 1]) < NOW then
      rcall('HDEL', P .. 'waiters', w[i])
    elseif w[i] ~= ME then
      found = true
    end
  end
  return found
end

local function invoke(main, keys, argv)
  begin(keys, argv)
  local ok, res = pcall(main)
  flush()
  if ENQUEUED then
    -- naming the caller, whose own reply says it (its runners heard it)
    rcall('PUBLISH', P .. 'work', ME)
  end
  if #FINALS > 0 and others_wait() then
    rcall('PUBLISH', P .. 'final', table.concat(FINALS, ' '))
  end
  if #CHANGED > 0 then
    rcall('PUBLISH', P .. 'status', table.concat(CHANGED, ' '))
  end
  if ok then
    return {'OK', ENQUEUED and 1 or 0, FINALS, res or 0}
  end
  if type(res) == 'table' and res.pynenc then
    return {'ERR', ENQUEUED and 1 or 0, FINALS, res.pynenc}
  end
  error(res, 0)
end
