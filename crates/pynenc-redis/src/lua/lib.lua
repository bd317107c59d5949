-- Shared helpers of every pynenc script: this file, then index.lua (the
-- query indexes) and apply.lua (transitions, `flush`, `invoke`), loaded as
-- one text. The Rust side prepends a prelude generated from
-- `InvocationStatus`:
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
-- about two sorted-set operations per invocation on the way REGISTERED ->
-- PENDING -> RUNNING -> SUCCESS: `idx:{task}` holds every invocation of a
-- task with its status *band* as score (inside a band, members sort by id:
-- creation order), so an invocation is added when routed and moves once
-- more, when it becomes final (the counts are the bands' sizes and, for
-- the statuses sharing band 1, the small set `owned`); `finals:{status}` logs the
-- ends per final status ('time id id ...', in time order: the auto purge);
-- `par:{parent}` lists children; `fk:{task}` counts FAILED per error kind;
-- `tasks` names every task with invocations. A record keeps the status it
-- was read with (`st0`); `flush` applies the net change of a call once.

-- The standard functions the steps use, kept in locals. In a function
-- library every global is looked up through two tables (the library's
-- empty globals table, then, by its metatable, the protected globals), and
-- the steps use them hundreds of times per invocation: an upvalue costs a
-- fraction of that. Globals are out of reach while a library loads, so
-- `begin` takes them at the first call (nothing here uses them before).
local function standard_functions()
  return redis.call, tonumber, tostring, ipairs, pairs, unpack, pcall, type, error, next, string, table,
    math, cjson
end
local rcall, tonumber, tostring, ipairs, pairs, unpack, pcall, type, error, next, string, table, math, cjson

-- Per-call state, set by `begin` at the start of every call: in a Redis
-- function library these locals outlive a call, so nothing may leak from
-- one call into the next.
local P, ARGV, REPLAY, ME, NOW_S, NOW, ENQUEUED, FINALS
-- ids of watched invocations (field `sw`) whose status this call changed
local CHANGED
-- records read by this call (id -> rec), records with staged fields (in order)
local RECS, DIRTY
-- index changes written at the end: queue tail / head, ids whose call
-- edges are gone (a loaded record's change to `owned` is its field `owned`:
-- true to add, false to remove)
local QUEUE_TAIL, QUEUE_HEAD, NO_EDGES
-- staged query-index changes: sorted-set and set members to remove (key ->
-- list)
-- and to add (key -> score, member, ...), hash counters (key -> field ->
-- delta), per task the band moves (task -> band, id, ...), task ids routed
-- by this call, ends per final status (status -> ids)
local ZREMS, SREMS, ZADDS, HINCRS, MOVES, NEW_TASKS, ENDS
-- the task totals a call adds: TOTS[task][code] = n (written by `flush`)
local TOTS
-- JSON strings of actors and contexts, history entries (they repeat within a call)
local QUOTED, ENTRIES

local function begin(keys, argv)
  if not rcall then
    rcall, tonumber, tostring, ipairs, pairs, unpack, pcall, type, error, next, string, table, math, cjson =
      standard_functions()
  end
  P = keys[1]
  ARGV = argv
  -- argv[1] = replay flag ('0' | '1'), ':', the id of the calling backend
  REPLAY = string.sub(argv[1], 1, 1) == '1'
  ME = string.sub(argv[1], 3)
  local t = rcall('TIME')
  NOW_S = t[1] .. string.format('%06d', tonumber(t[2]))
  NOW = tonumber(NOW_S)
  ENQUEUED = false
  FINALS, RECS, DIRTY, CHANGED = {}, {}, {}, {}
  QUEUE_TAIL, QUEUE_HEAD, NO_EDGES = {}, {}, {}
  ZREMS, SREMS, ZADDS, HINCRS, MOVES, NEW_TASKS, ENDS = {}, {}, {}, {}, {}, {}, {}
  TOTS = {}
  QUOTED, ENTRIES = {}, {}
end

-- an empty list, never written to
local EMPTY = {}

-- A member `owned` always has, with the score +inf (written with every
-- addition; readers take the scores below +inf): it is longer than Redis
-- keeps in the compact encoding of a small sorted set, so `owned` stays a
-- skip list, whose inserts and removals cost a fraction of the compact
-- form's (a list searched from its start, each score parsed) at the sizes
-- `owned` has (what runners hold).
local OWNED_KEEPER = '(this member keeps the sorted set in its skip-list form; it is not an invocation)'

-- the invocations in `owned` (without OWNED_KEEPER), by the time of their last status
local function owned_ids()
  return rcall('ZRANGEBYSCORE', P .. 'owned', '-inf', '(+inf')
end

-- how many invocations `owned` holds (without OWNED_KEEPER)
local function owned_count()
  return rcall('ZCOUNT', P .. 'owned', '-inf', '(+inf')
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

-- a per-task key ('idx', 'cnt', 'fk', 'tot'; the task last: it may hold any character)
local function tkey(kind, task)
  return P .. kind .. ':' .. task
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

-- sets a field (and a second one, when given) of any invocation: staged
-- when this script loaded it, else written at once
local function set_field(id, field, value, field2, value2)
  local rec = RECS[id]
  if rec then
    stage(rec, field, value)
    if field2 then
      stage(rec, field2, value2)
    end
  elseif field2 then
    rcall('HSET', k('inv', id), field, value, field2, value2)
  else
    rcall('HSET', k('inv', id), field, value)
  end
end

-- The fields every transition reads (with `call` for the record of a
-- pick-up). `x` is set when any of the rarer fields is — the ones a
-- transition needs (gkey, rkey, waited, edges, cxl, wo, sw) and those of the
-- record (parent, sched, graise, rerun, gscope, read by pick-ups only) —
-- which are then read by a second HMGET (`reroute` only matters with
-- rkey; `created` only matters with gkey or waited, so a transition reads
-- it with them). A record routed before
-- `tc` (the task id, '#', 16 hex digits of the call's hash) existed has its
-- rarer fields read anyway.
local READ_FIELDS = {'status', 'owner', 'hn', 'x', 'tc'}
local RARE_FIELDS = {'gkey', 'rkey', 'reroute', 'waited', 'edges', 'cxl', 'wo', 'sw', 'created'}
-- A pick-up reads the record too, and no owner: an invocation available
-- for run has none (a field missing from a small hash costs a scan of it)
local FULL_FIELDS = {'status', 'created', 'hn', 'x', 'tc', 'call'}
local RARE_FULL_FIELDS = {'gkey', 'rkey', 'reroute', 'waited', 'edges', 'cxl', 'wo', 'sw', 'rerun', 'gscope',
  'graise', 'parent', 'sched'}

-- the names of the history fields ('h1', 'h2', ...), kept between calls,
-- and their numbers as strings
local HNAMES, HNUM, HN_OF = {}, {}, {}
for i = 1, 16 do
  HNUM[i] = '' .. i
  -- and back: no number parsing for the usual counts
  HN_OF[HNUM[i]] = i
end

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

-- A picked invocation in a pick-up's reply, as the client decodes it
-- (`PICK_LEN` in decode.rs): four values — its id, call and creation time,
-- then false or, when it has any of them, its rarer fields {parent, sched,
-- gkey, graise, rkey, reroute, rerun, gscope} (false where missing); most
-- of a reply's cost is per value.
-- appends a picked invocation to `out` (the rarer fields nil or false where missing)
local function append_picked(out, id, call, created, parent, sched, gkey, graise, rkey, reroute, rerun, gscope)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = id, call, created
  if parent or sched or gkey or graise or rkey or reroute or rerun or gscope then
    out[n + 4] = {parent or false, sched or false, gkey or false, graise or false, rkey or false, reroute or false,
      rerun or false, gscope or false}
  else
    out[n + 4] = false
  end
end

-- the rarer fields of a record, from `r[o + 1]` on (RARE_FIELDS, or with
-- `full` RARE_FULL_FIELDS)
local function take_rare(rec, r, o, full)
  rec.gkey, rec.rkey, rec.reroute = nz(r[o + 1]), nz(r[o + 2]), r[o + 3] == '1'
  rec.waited, rec.edges, rec.cxl, rec.wo, rec.sw = nz(r[o + 4]), nz(r[o + 5]), nz(r[o + 6]), nz(r[o + 7]),
    nz(r[o + 8])
  if full then
    rec.rerun, rec.gscope, rec.graise = nz(r[o + 9]), nz(r[o + 10]), nz(r[o + 11])
    rec.parent, rec.sched = nz(r[o + 12]), nz(r[o + 13])
  else
    rec.created = r[o + 9]
  end
end

-- The fields of an invocation that transitions need, unchecked; nil if it
-- does not exist. `how`: nil for a transition, FULL for a pick-up (also
-- what a pick-up replies: `rec.call` and the rarer fields; an invocation
-- not available for a run is only its status), ALL for a transition of an
-- invocation that most likely has rarer fields (a waiting one: its
-- `wo`), read with the others in one command (a missing field costs a
-- scan of the hash, a second command much more). The table is made with
-- every field a usual step sets (nil until then): a field added to a full
-- table makes Lua resize it, which cost more than the rest of the step's
-- table work. `st0`: the status as read, for the band `flush` changes.
local FULL, ALL = 1, 2
local ALL_FIELDS = {}
for i = 1, #READ_FIELDS do
  ALL_FIELDS[i] = READ_FIELDS[i]
end
for i = 1, #RARE_FIELDS do
  ALL_FIELDS[#READ_FIELDS + i] = RARE_FIELDS[i]
end

local function read(id, how)
  local full = how == FULL
  local rec = RECS[id]
  if rec then
    if full and not rec.call then
      local v = rcall('HMGET', rec.key, 'call', 'parent', 'sched', 'rerun', 'gscope', 'graise', 'created')
      rec.parent, rec.sched = nz(v[2]), nz(v[3])
      rec.rerun, rec.gscope, rec.graise = nz(v[4]), nz(v[5]), nz(v[6])
      rec.call, rec.created = v[1], v[7]
    end
    return rec
  end
  local key = k('inv', id)
  local v
  if full then
    v = rcall('HMGET', key, unpack(FULL_FIELDS))
    if not v[1] then
      return nil
    end
    if not AVAILABLE[v[1]] then
      -- not to be picked (a stale queue entry: one picked from `blocking`
      -- or ended since): its status alone, and not kept, so that a later
      -- read in this call reads it whole
      return {id = id, key = key, status = v[1]}
    end
    rec = {id = id, key = key, status = v[1], created = v[2], hn = HN_OF[v[3]] or tonumber(v[3]) or 0,
      tc = nz(v[5]), st0 = v[1], owner = nil, call = nil, dirty = nil, w = nil, hist = nil, task = nil,
      owner_changed = nil, owned = nil}
  else
    v = rcall('HMGET', key, unpack(how == ALL and ALL_FIELDS or READ_FIELDS))
    if not v[1] then
      return nil
    end
    rec = {id = id, key = key, status = v[1], owner = nz(v[2]), created = nil,
      hn = HN_OF[v[3]] or tonumber(v[3]) or 0, tc = nz(v[5]), st0 = v[1], call = nil, dirty = nil, w = nil,
      hist = nil, task = nil, owner_changed = nil, owned = nil}
  end
  if how == ALL then
    take_rare(rec, v, #READ_FIELDS, false)
  elseif rec.tc == nil or v[4] then
    take_rare(rec, rcall('HMGET', key, unpack(full and RARE_FULL_FIELDS or RARE_FIELDS)), 0, full)
  end
  if full then
    rec.call = v[6]
  end
  RECS[id] = rec
  return rec
end

-- the task id of a loaded record (`rec.key`, and `rec.tc` when read): from
-- its field `tc`, or from its call for records routed before `tc` existed
local function task_of(rec)
  local t = rec.task
  if not t then
    local tc = rec.tc
    if tc then
      t = string.sub(tc, 1, #tc - 17)
    else
      local ok, c = pcall(cjson.decode, rcall('HGET', rec.key, 'call') or '')
      t = ok and type(c) == 'table' and type(c.task_id) == 'string' and c.task_id or '?'
    end
    rec.task = t
  end
  return t
end

-- like `read` (`how`: nil or ALL), failing with CORRUPT when the status
-- is not a status
local function load(id, how)
  local rec = read(id, how)
  if rec and not ST[rec.status] then
    fail('CORRUPT', rec.key, 'status', rec.status)
  end
  return rec
end

-- the stored record of an invocation, as the client decodes it (its
-- fields never change after routing)
local function record(id)
  local r = rcall('HMGET', k('inv', id), 'call', 'parent', 'created', 'sched', 'gkey', 'graise', 'rkey',
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

-- appends a history entry to a loaded record; `flush` writes the entries a
-- call made as one field (h1, h2, ...: one or more entries separated by
-- commas) and the count of fields, hn
local function history(rec, status, owner, actor, ctx)
  dirty(rec)
  local h = rec.hist
  if not h then
    -- room for a second entry (a pick-up's PENDING, then RUNNING)
    rec.hist = {entry(status, owner, actor, ctx), nil}
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
  local last = rcall('HGET', rec.key, hname(rec.hn))
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
