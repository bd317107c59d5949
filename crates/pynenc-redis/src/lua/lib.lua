-- Shared helpers of every pynenc script. The Rust side prepends a prelude
-- generated from `InvocationStatus`:
--   ST              status name -> status name (every valid status)
--   ALLOWED         ALLOWED[from][to] = true for every allowed transition
--   REQUIRES_OWNER  REQUIRES_OWNER[from][to] = true where only the owner may make it
--   OWNERSHIP       status -> 'acquire' | 'keep' | 'release'
--   FINAL, OWNED_RUNNING, AVAILABLE, INITIAL   status -> true
-- and appends the steps' bodies, each defining `main`: as one Redis function
-- library (loaded once; each step a function calling `invoke(main, keys,
-- argv)`), or, where functions are not available, as one script per step
-- ending with `return invoke(main, KEYS, ARGV)`. Nothing here calls Redis
-- while the library loads.
--
-- keys[1] is the app prefix; argv[1] is '<replay>:<backend id>', replay
-- being '1' when the call is a replay after an ambiguous connection failure
-- ('0' otherwise) and the backend id naming the caller (see `others_wait`).
-- Failures are raised as
-- `{pynenc = {kind, ...}}` and returned to the client as {'ERR', ...}.
--
-- Writes are batched per call: the fields a step changes in an
-- invocation's hash (status, owner, history entries, result...) are staged
-- on its record and written with one HSET per invocation at the end, and
-- the shared indexes (`queue`, `owned`, the query indexes `ts:`, `own:`,
-- `fin:`...) get one command per index key per call. Every record a call
-- reads goes through `RECS`, so a call always sees its own staged changes.
--
-- The query indexes (see the crate documentation for the key layout) cost
-- at most two sorted-set operations per invocation on the way REGISTERED ->
-- PENDING -> RUNNING -> SUCCESS: `idx:{task}` holds every invocation of a
-- task, scored by its status *band* and the millisecond of its id (see
-- `score`), so an invocation is added when routed and moves once more when
-- it becomes final; `cnt:{task}` counts per status (one HINCRBY per task
-- and status per call); `finals:{status}` logs the ends per final status
-- ('time id id ...', in time order: the auto purge); `par:{parent}` lists
-- children; `fk:{task}` counts FAILED per error kind; `tasks` names every
-- task with invocations. A record keeps the status it was read with
-- (`st0`); `flush` applies the net change of a call once.

-- Per-call state, set by `begin` at the start of every call: in a Redis
-- function library these locals outlive a call, so nothing may leak from
-- one call into the next.
local P, ARGV, REPLAY, ME, NOW_S, NOW, ENQUEUED, FINALS
-- records read by this call (id -> rec), records with staged fields (in order)
local RECS, DIRTY
-- index changes written at the end: queue tail / head, owned (id -> true
-- to add, false to remove), ids whose call edges are gone
local QUEUE_TAIL, QUEUE_HEAD, OWNED, OWNED_IDS, NO_EDGES
-- staged query-index changes: sorted-set members to remove (key -> list)
-- and to add or move (key -> score, member, ...), hash counters (key ->
-- field -> delta), task ids routed by this call, ends per final status
local ZREMS, ZADDS, HINCRS, NEW_TASKS, ENDS
-- JSON strings of actors and contexts, history entries (they repeat within a call)
local QUOTED, ENTRIES

local function begin(keys, argv)
  P = keys[1]
  ARGV = argv
  -- argv[1] = replay flag ('0' | '1'), ':', the id of the calling backend
  REPLAY = string.sub(argv[1], 1, 1) == '1'
  ME = string.sub(argv[1], 3)
  local t = redis.call('TIME')
  NOW_S = t[1] .. string.format('%06d', tonumber(t[2]))
  NOW = tonumber(NOW_S)
  ENQUEUED = false
  FINALS, RECS, DIRTY = {}, {}, {}
  QUEUE_TAIL, QUEUE_HEAD, OWNED, OWNED_IDS, NO_EDGES = {}, {}, {}, {}, {}
  ZREMS, ZADDS, HINCRS, NEW_TASKS, ENDS = {}, {}, {}, {}, {}
  QUOTED, ENTRIES = {}, {}
end

local function fail(...)
  error({pynenc = {...}})
end

-- integers (µs timestamps < 2^53) printed exactly
local function fmt(n)
  return string.format('%.0f', n)
end

local function k(kind, id)
  return P .. kind .. ':' .. id
end

-- a per-task key ('idx', 'cnt', 'fk'; the task last: it may hold any character)
local function tkey(kind, task)
  return P .. kind .. ':' .. task
end

-- The bands of `idx:{task}`: the statuses an invocation rests in on its
-- usual way (queued, picked, running, paused) share band 1, so only
-- becoming final moves it; the statuses it waits in aside share band 2;
-- each final status has a band of its own (listings by final status need
-- no filtering). A status not named here (a future one) is in band 7.
local BAND = {}
BAND[ST.REGISTERED], BAND[ST.PENDING], BAND[ST.RUNNING], BAND[ST.PAUSED] = 1, 1, 1, 1
BAND[ST.RESUMED], BAND[ST.PENDING_RECOVERY], BAND[ST.RUNNING_RECOVERY], BAND[ST.KILLED] = 1, 1, 1, 1
BAND[ST.SCHEDULED], BAND[ST.CONCURRENCY_CONTROLLED], BAND[ST.REROUTED], BAND[ST.RETRY] = 2, 2, 2, 2
BAND[ST.SUCCESS], BAND[ST.FAILED], BAND[ST.CANCELLED], BAND[ST.CONCURRENCY_CONTROLLED_FINAL] = 3, 4, 5, 6
local BANDS = 7

local function band_of(status)
  return BAND[status] or BANDS
end

-- 2^42: the width of a band, in milliseconds (until the year 2109)
local BAND_WIDTH = 4398046511104

-- The millisecond of an id (its first 14 hex digits are its time in µs),
-- at most BAND_WIDTH - 1: ids sort by (ms, id), which is id order.
local function id_ms(id)
  local ms = math.floor((tonumber(string.sub(id, 1, 14), 16) or 0) / 1000)
  if ms >= BAND_WIDTH then
    return BAND_WIDTH - 1
  end
  return ms
end

-- the score of an id in a band of `idx:{task}` (exact: below 2^53)
local function score(band, id)
  return fmt(band * BAND_WIDTH + id_ms(id))
end

-- stages the removal of `member` from the sorted set `key`
local function zrem_later(key, member)
  local l = ZREMS[key]
  if not l then
    ZREMS[key] = {member}
  else
    l[#l + 1] = member
  end
end

-- stages the addition of `member` to the sorted set `key`, or its move to
-- `sc` (score '0': a lex index)
local function zadd_later(key, member, sc)
  local l = ZADDS[key]
  if not l then
    l = {}
    ZADDS[key] = l
  end
  local n = #l
  l[n + 1], l[n + 2] = sc or '0', member
end

-- stages `HINCRBY key field by` (a field that reaches 0 is removed)
local function hincr_later(key, field, by)
  local h = HINCRS[key]
  if not h then
    h = {}
    HINCRS[key] = h
  end
  h[field] = (h[field] or 0) + by
end

-- nil for missing (false) and empty values
local function nz(s)
  if s == false or s == nil or s == '' then
    return nil
  end
  return s
end

-- a JSON string (or null)
local function q(s)
  if not s then
    return 'null'
  end
  local r = QUOTED[s]
  if not r then
    r = cjson.encode(s)
    QUOTED[s] = r
  end
  return r
end

-- Staging: a loaded record collects its changes — `rec.status`,
-- `rec.owner`, history entries in `rec.hist` and extra field/value pairs
-- in `rec.w` — and `flush` writes them with one HSET.
local function dirty(rec)
  if not rec.dirty then
    rec.dirty = true
    DIRTY[#DIRTY + 1] = rec
  end
end

-- stages `field = value` in the hash of a loaded record
local function stage(rec, field, value)
  dirty(rec)
  local w = rec.w
  if not w then
    rec.w = {field, value}
    return
  end
  local n = #w
  w[n + 1] = field
  w[n + 2] = value
end

-- sets a field of any invocation: staged when this script loaded it
local function set_field(id, field, value)
  local rec = RECS[id]
  if rec then
    stage(rec, field, value)
  else
    redis.call('HSET', k('inv', id), field, value)
  end
end

-- The fields every transition reads. `x` is set when any of the rarer
-- fields a transition needs (gkey, rkey, waited, edges, cxl, wo, and rerun
-- and gscope for the record) is, which are then read by a second HMGET
-- (with `reroute`, which only matters with rkey).
local READ_FIELDS = {'status', 'owner', 'created', 'hn', 'x', 'task'}
local FULL_FIELDS = {'status', 'owner', 'created', 'hn', 'x', 'task', 'call', 'parent', 'sched', 'graise', 'reroute'}
local RARE_FIELDS = {'gkey', 'rkey', 'reroute', 'waited', 'edges', 'cxl', 'rerun', 'gscope', 'wo'}

-- the fields of a record as the client decodes it: id, call, parent,
-- created, sched, gkey, graise, rkey, reroute, rerun, gscope
local RECORD_LEN = 11

-- the fields of an invocation that transitions need, unchecked; nil if it
-- does not exist. `full`: also the record the client decodes (`rec.record`,
-- RECORD_LEN fields). `st0`: the status as read, for the counts and the
-- band `flush` changes.
local function read(id, full)
  local rec = RECS[id]
  if rec then
    if full and not rec.record then
      local v = redis.call('HMGET', rec.key, 'call', 'parent', 'sched', 'graise', 'reroute')
      rec.record = {id, v[1], v[2], rec.created, v[3], rec.gkey or false, v[4], rec.rkey or false, v[5],
        rec.rerun or false, rec.gscope or false}
    end
    return rec
  end
  local key = k('inv', id)
  local v = redis.call('HMGET', key, unpack(full and FULL_FIELDS or READ_FIELDS))
  if not v[1] then
    return nil
  end
  rec = {id = id, key = key, status = v[1], owner = nz(v[2]), created = v[3], hn = tonumber(v[4]) or 0,
    task = nz(v[6]), st0 = v[1]}
  if v[5] then
    local r = redis.call('HMGET', key, unpack(RARE_FIELDS))
    rec.gkey, rec.rkey, rec.reroute = nz(r[1]), nz(r[2]), r[3] == '1'
    rec.waited, rec.edges, rec.cxl = nz(r[4]), nz(r[5]), nz(r[6])
    rec.rerun, rec.gscope, rec.wo = nz(r[7]), nz(r[8]), nz(r[9])
  end
  if full then
    rec.record = {id, v[7], v[8], v[3], v[9], rec.gkey or false, v[10], rec.rkey or false, v[11],
      rec.rerun or false, rec.gscope or false}
  end
  RECS[id] = rec
  return rec
end

-- the task id of a loaded record (records routed before the field `task`
-- existed: read from the call)
local function task_of(rec)
  local t = rec.task
  if not t then
    local ok, c = pcall(cjson.decode, redis.call('HGET', rec.key, 'call') or '')
    t = ok and type(c) == 'table' and type(c.task_id) == 'string' and c.task_id or '?'
    rec.task = t
  end
  return t
end

-- like `read`, failing with CORRUPT when the status is not a status
local function load(id)
  local rec = read(id)
  if rec and not ST[rec.status] then
    fail('CORRUPT', rec.key, 'status', rec.status)
  end
  return rec
end

-- the stored record of an invocation, as the client decodes it (its
-- fields never change after routing)
local function record(id)
  local r = redis.call('HMGET', k('inv', id), 'call', 'parent', 'created', 'sched', 'gkey', 'graise', 'rkey',
    'reroute', 'rerun', 'gscope')
  table.insert(r, 1, id)
  return r
end

-- the owner after `actor` sets `to`, or a TRANSITION failure (nothing written)
local function next_owner(rec, to, actor)
  local from = rec.status
  local allowed, owned = ALLOWED[from], REQUIRES_OWNER[from]
  if not (allowed and allowed[to]) or (owned[to] and rec.owner ~= actor) then
    fail('TRANSITION', rec.id, rec.status, rec.owner or false, to, actor)
  end
  local o = OWNERSHIP[to]
  if o == 'acquire' then
    return actor
  elseif o == 'keep' then
    return rec.owner
  end
  return nil
end

-- a history entry `[status, owner, actor, timestamp_us, execution_context]`;
-- the entries of a call repeat (same time, often the same runner), so each
-- is built once per call (ENTRIES[status][owner][actor][ctx])
local function entry(status, owner, actor, ctx)
  local t = ENTRIES[status]
  if not t then
    t = {}
    ENTRIES[status] = t
  end
  local o = owner or false
  local t2 = t[o]
  if not t2 then
    t2 = {}
    t[o] = t2
  end
  local a = actor or false
  local t3 = t2[a]
  if not t3 then
    t3 = {}
    t2[a] = t3
  end
  local c = ctx or false
  local e = t3[c]
  if not e then
    e = '["' .. status .. '",' .. q(owner) .. ',' .. q(actor) .. ',' .. NOW_S .. ',' .. q(ctx) .. ']'
    t3[c] = e
  end
  return e
end

-- the names of the history fields ('h1', 'h2', ...), kept between calls
local HNAMES = {}

local function hname(n)
  local name = HNAMES[n]
  if not name then
    name = 'h' .. n
    if n <= 64 then
      HNAMES[n] = name
    end
  end
  return name
end

-- appends a history entry to a loaded record; `flush` writes the entries a
-- call made as one field (h1, h2, ...: one or more entries separated by
-- commas) and the count of fields, hn
local function history(rec, status, owner, actor, ctx)
  dirty(rec)
  local h = rec.hist
  if not h then
    rec.hist = {entry(status, owner, actor, ctx)}
  else
    h[#h + 1] = entry(status, owner, actor, ctx)
  end
end

-- whether the last step of the invocation is `actor` setting `to` (a replay
-- after a lost reply finds its own effect)
local function already_done(rec, to, actor)
  if not rec or rec.hn == 0 then
    return false
  end
  local last = redis.call('HGET', rec.key, hname(rec.hn))
  if not last then
    return false
  end
  local ok, list = pcall(cjson.decode, '[' .. last .. ']')
  local e = ok and type(list) == 'table' and list[#list]
  return type(e) == 'table' and e[1] == to and e[3] == actor
end

local function enqueue(id)
  QUEUE_TAIL[#QUEUE_TAIL + 1] = id
  ENQUEUED = true
end

-- work taken back from a stopped or dead runner runs before new work
local function enqueue_front(id)
  QUEUE_HEAD[#QUEUE_HEAD + 1] = id
  ENQUEUED = true
end

local function set_owned(id, on)
  if OWNED[id] == nil then
    OWNED_IDS[#OWNED_IDS + 1] = id
  end
  OWNED[id] = on
end

-- the error kind of an invocation that becomes FAILED without a kind from
-- its end (a status set directly): the kind of the error stored before
local function stored_error_kind(rec)
  local ok, e = pcall(cjson.decode, redis.call('HGET', rec.key, 'error') or '')
  if ok and type(e) == 'table' and type(e.kind) == 'string' then
    return e.kind
  end
  return nil
end

-- the waits on an invocation that became final are over: it leaves the
-- `wo:` set of every invocation that waited on it, and its `wb:` set goes
local function release_waits(id)
  local wb = k('wb', id)
  for _, w in ipairs(redis.call('SMEMBERS', wb)) do
    redis.call('SREM', k('wo', w), id)
  end
  redis.call('DEL', wb)
end

-- the waits an invocation made (it became final, or is deleted): it leaves
-- the `wb:` set of every invocation it waited on, and its `wo:` set goes
local function release_own_waits(id)
  local wo = k('wo', id)
  for _, w in ipairs(redis.call('SMEMBERS', wo)) do
    redis.call('SREM', k('wb', w), id)
  end
  redis.call('DEL', wo)
end

-- not final and not SCHEDULED: what registration scope `active` reuses
local function is_active(status)
  return not FINAL[status] and status ~= ST.SCHEDULED
end

-- writes a checked status (with an extra field, e.g. the result) and keeps
-- every index in step with it (the `ts:` and `own:` sets in `flush`)
local function put_status(rec, to, owner, efield, evalue)
  local id, old = rec.id, rec.status
  dirty(rec)
  if owner ~= rec.owner then
    rec.owner_changed = true
  end
  if efield then
    stage(rec, efield, evalue)
  end
  local was_owned, is_owned = OWNED_RUNNING[old] or false, OWNED_RUNNING[to] or false
  if is_owned or was_owned then
    -- `owned` is ordered by the time of the last status
    set_owned(id, is_owned)
  end
  local gkey = rec.gkey
  if gkey then
    if old == ST.REGISTERED and to ~= ST.REGISTERED then
      redis.call('ZREM', k('reg', gkey), id)
    elseif to == ST.REGISTERED and old ~= ST.REGISTERED then
      redis.call('ZADD', k('reg', gkey), rec.created, id)
    end
    local was_active, now_active = is_active(old), is_active(to)
    if was_active ~= now_active then
      if now_active then
        redis.call('ZADD', k('gact', gkey), 0, id)
      else
        redis.call('ZREM', k('gact', gkey), id)
      end
    end
    if to == ST.SUCCESS then
      -- registration scope `cached`: the successes of the key by end time
      redis.call('ZADD', k('gok', gkey), NOW_S, id)
    end
  end
  if rec.rkey and was_owned ~= is_owned then
    if is_owned then
      redis.call('SADD', k('run', rec.rkey), id)
    else
      redis.call('SREM', k('run', rec.rkey), id)
    end
  end
  if old == ST.SCHEDULED and to ~= ST.SCHEDULED then
    redis.call('ZREM', P .. 'scheduled', id)
  end
  if rec.waited then
    if AVAILABLE[to] and not AVAILABLE[old] then
      redis.call('ZADD', P .. 'blocking', rec.created, id)
    elseif AVAILABLE[old] and not AVAILABLE[to] then
      redis.call('ZREM', P .. 'blocking', id)
    end
  end
  if FINAL[to] then
    -- the log of ends per final status (auto purge)
    local e = ENDS[to]
    if not e then
      ENDS[to] = {id}
    else
      e[#e + 1] = id
    end
    if to == ST.FAILED then
      local kind = rec.ekind or stored_error_kind(rec)
      if kind then
        stage(rec, 'ekind', kind)
        hincr_later(tkey('fk', task_of(rec)), kind, 1)
      end
    end
    if rec.waited then
      release_waits(id)
    end
    if rec.wo then
      release_own_waits(id)
      stage(rec, 'wo', '')
      rec.wo = nil
    end
    if rec.cxl then
      -- a cancel request lasts until the invocation is final
      redis.call('SREM', k('cxl', rec.cxl), id)
      stage(rec, 'cxl', '')
      rec.cxl = nil
    end
  end
  rec.status = to
  rec.owner = owner
end

local function add_edge(parent_inv, parent_call, callee)
  redis.call('HINCRBY', k('edges', parent_call), callee, 1)
  redis.call('RPUSH', k('iedges', parent_inv), parent_call, callee)
  if NO_EDGES[parent_inv] ~= false then
    -- flag the caller so that removing its edges is free when it has none
    set_field(parent_inv, 'edges', '1')
    set_field(parent_inv, 'x', '1')
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
  local list = redis.call('LRANGE', ek, 0, -1)
  if #list == 0 then
    return
  end
  for i = 1, #list - 1, 2 do
    local hk = k('edges', list[i])
    if redis.call('HINCRBY', hk, list[i + 1], -1) <= 0 then
      redis.call('HDEL', hk, list[i + 1])
    end
  end
  redis.call('DEL', ek)
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
      local parked = redis.call('LRANGE', ck, 0, -1)
      if #parked > 0 then
        redis.call('DEL', ck)
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
    apply(rec, ST.CANCELLED, actor, false, 'error', cancelled)
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
    redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

-- writes the staged fields and index changes (callable more than once
-- in a call: everything staged so far is written and forgotten)
local function flush()
  for _, rec in ipairs(DIRTY) do
    local f = rec.w or {}
    local n = #f
    f[n + 1], f[n + 2] = 'status', rec.status
    n = n + 2
    if rec.hist then
      local hn = rec.hn + 1
      rec.hn = hn
      local h = rec.hist
      f[n + 1], f[n + 2], f[n + 3], f[n + 4] = hname(hn), #h == 1 and h[1] or table.concat(h, ','), 'hn', hn
      n = n + 4
    end
    if rec.owner_changed then
      -- a released owner is written empty (reads treat '' as none)
      f[n + 1], f[n + 2] = 'owner', rec.owner or ''
    end
    call_chunked('HSET', rec.key, f)
    rec.w, rec.dirty, rec.owner_changed, rec.hist = nil, nil, nil, nil
    -- the counts and the band change once per call
    local old, new = rec.st0, rec.status
    if new ~= old then
      local t = task_of(rec)
      local ck = tkey('cnt', t)
      hincr_later(ck, old, -1)
      hincr_later(ck, new, 1)
      local b = band_of(new)
      if b ~= band_of(old) then
        zadd_later(tkey('idx', t), rec.id, score(b, rec.id))
      end
      rec.st0 = new
    end
  end
  DIRTY = {}
  if #OWNED_IDS > 0 then
    local add, rem = {}, {}
    for _, id in ipairs(OWNED_IDS) do
      if OWNED[id] then
        add[#add + 1] = NOW_S
        add[#add + 1] = id
      else
        rem[#rem + 1] = id
      end
    end
    if #add > 0 then
      call_chunked('ZADD', P .. 'owned', add)
    end
    if #rem > 0 then
      call_chunked('ZREM', P .. 'owned', rem)
    end
    OWNED, OWNED_IDS = {}, {}
  end
  for key, l in pairs(ZREMS) do
    call_chunked('ZREM', key, l)
  end
  ZREMS = {}
  for key, l in pairs(ZADDS) do
    call_chunked('ZADD', key, l)
  end
  ZADDS = {}
  for key, h in pairs(HINCRS) do
    for field, by in pairs(h) do
      if by ~= 0 and redis.call('HINCRBY', key, field, by) <= 0 then
        redis.call('HDEL', key, field)
      end
    end
  end
  HINCRS = {}
  local tasks = {}
  for t in pairs(NEW_TASKS) do
    tasks[#tasks + 1] = t
  end
  if #tasks > 0 then
    call_chunked('SADD', P .. 'tasks', tasks)
    NEW_TASKS = {}
  end
  for st, ids in pairs(ENDS) do
    -- one entry per call and final status: 'time id id ...'
    redis.call('RPUSH', P .. 'finals:' .. st, NOW_S .. ' ' .. table.concat(ids, ' '))
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

-- Runs `main` for one call (`keys`, `argv`: the script's KEYS and ARGV or
-- the function's arguments), writes what it staged, publishes the
-- notifications and shapes the reply:
-- {'OK'|'ERR', enqueued 0/1, {ids that became final}, result | failure}.
-- The ids that became final go out in one message, separated by spaces,
-- when a backend other than the caller waits for results (hash `waiters`:
-- backend id -> registration expiry, µs); the caller learns them from the
-- reply.
local function others_wait()
  local w = redis.call('HGETALL', P .. 'waiters')
  local found = false
  for i = 1, #w - 1, 2 do
    if tonumber(w[i + 1]) < NOW then
      redis.call('HDEL', P .. 'waiters', w[i])
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
    redis.call('PUBLISH', P .. 'work', '1')
  end
  if #FINALS > 0 and others_wait() then
    redis.call('PUBLISH', P .. 'final', table.concat(FINALS, ' '))
  end
  if ok then
    return {'OK', ENQUEUED and 1 or 0, FINALS, res or 0}
  end
  if type(res) == 'table' and res.pynenc then
    return {'ERR', ENQUEUED and 1 or 0, FINALS, res.pynenc}
  end
  error(res, 0)
end
