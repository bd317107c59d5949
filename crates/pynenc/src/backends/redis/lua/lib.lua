-- Shared helpers of every pynenc script. The Rust side prepends a prelude
-- generated from `InvocationStatus`:
--   ST              status name -> status name (every valid status)
--   ALLOWED         'FROM>TO' -> true for every allowed transition
--   REQUIRES_OWNER  'FROM>TO' -> true where only the owner may make it
--   OWNERSHIP       status -> 'acquire' | 'keep' | 'release'
--   FINAL, OWNED_RUNNING, AVAILABLE, INITIAL   status -> true
-- and appends the script's own body, which defines `main` and ends with
-- `return run(main)`.
--
-- KEYS[1] is the app prefix; ARGV[1] is '1' when the call is a replay after
-- an ambiguous connection failure. Failures are raised as
-- `{pynenc = {kind, ...}}` and returned to the client as {'ERR', ...}.

local P = KEYS[1]
local REPLAY = ARGV[1] == '1'
local NOW_S, NOW
do
  local t = redis.call('TIME')
  NOW_S = t[1] .. string.format('%06d', tonumber(t[2]))
  NOW = tonumber(NOW_S)
end
local ENQUEUED = false
local FINALS = {}
-- per-script memos: history entries to append, ids already in `owned`
-- at NOW, ids whose call edges are gone
local HIST, HIST_IDS, OWNED_NOW, NO_EDGES = {}, {}, {}, {}

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

-- nil for missing (false) and empty values
local function nz(s)
  if s == false or s == nil or s == '' then
    return nil
  end
  return s
end

-- a JSON string (or null); actors and contexts repeat within a script
local QUOTED = {}
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

-- the fields of an invocation that transitions need, unchecked; nil if it
-- does not exist. `full`: also the record the client decodes (`rec.record`).
local function read(id, full)
  local key = k('inv', id)
  local v
  if full then
    v = redis.call('HMGET', key, 'status', 'owner', 'created', 'gkey', 'rkey', 'waited', 'reroute', 'edges',
      'call', 'parent', 'sched', 'graise')
  else
    v = redis.call('HMGET', key, 'status', 'owner', 'created', 'gkey', 'rkey', 'waited', 'reroute', 'edges')
  end
  if not v[1] then
    return nil
  end
  local rec = {id = id, key = key, status = v[1], owner = nz(v[2]), created = v[3], gkey = nz(v[4]),
    rkey = nz(v[5]), waited = nz(v[6]), reroute = v[7] == '1', edges = nz(v[8])}
  if full then
    rec.record = {id, v[9], v[10], v[3], v[11], v[4], v[12], v[5], v[7]}
  end
  return rec
end

-- like `read`, failing with CORRUPT when the status is not a status
local function load(id)
  local rec = read(id)
  if rec and not ST[rec.status] then
    fail('CORRUPT', rec.key, 'status', rec.status)
  end
  return rec
end

-- the stored record of an invocation, as the client decodes it
local function record(id)
  local r = redis.call('HMGET', k('inv', id), 'call', 'parent', 'created', 'sched', 'gkey', 'graise', 'rkey', 'reroute')
  table.insert(r, 1, id)
  return r
end

-- the owner after `actor` sets `to`, or a TRANSITION failure (nothing written)
local function next_owner(rec, to, actor)
  local step = rec.status .. '>' .. to
  if not ALLOWED[step] or (REQUIRES_OWNER[step] and rec.owner ~= actor) then
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

-- whether the last step of the invocation is `actor` setting `to` (a replay
-- after a lost reply finds its own effect)
local function already_done(id, to, actor)
  local last = redis.call('LINDEX', k('hist', id), -1)
  if not last then
    return false
  end
  local ok, e = pcall(cjson.decode, last)
  return ok and type(e) == 'table' and e[1] == to and e[3] == actor
end

local function enqueue(id)
  redis.call('RPUSH', P .. 'queue', id)
  ENQUEUED = true
end

-- work taken back from a stopped or dead runner runs before new work
local function enqueue_front(id)
  redis.call('LPUSH', P .. 'queue', id)
  ENQUEUED = true
end

-- writes a checked status (with `extra` fields, e.g. the result) and keeps
-- every index in step with it
local function put_status(rec, to, owner, extra)
  local id, key, old = rec.id, rec.key, rec.status
  local fin = FINAL[to]
  local f = {'status', to, 'status_at', NOW_S}
  if owner then
    f[5], f[6] = 'owner', owner
  end
  if fin then
    f[#f + 1], f[#f + 2] = 'final_at', NOW_S
  end
  if extra then
    for i = 1, #extra do
      f[#f + 1] = extra[i]
    end
  end
  redis.call('HSET', key, unpack(f))
  if not owner and rec.owner then
    redis.call('HDEL', key, 'owner')
  end
  if fin then
    redis.call('ZADD', P .. 'finals', NOW_S, id)
  end
  local was_owned, is_owned = OWNED_RUNNING[old] or false, OWNED_RUNNING[to] or false
  if is_owned then
    if not OWNED_NOW[id] then
      redis.call('ZADD', P .. 'owned', NOW_S, id)
      OWNED_NOW[id] = true
    end
  elseif was_owned then
    redis.call('ZREM', P .. 'owned', id)
    OWNED_NOW[id] = nil
  end
  if rec.gkey then
    if old == ST.REGISTERED and to ~= ST.REGISTERED then
      redis.call('ZREM', k('reg', rec.gkey), id)
    elseif to == ST.REGISTERED and old ~= ST.REGISTERED then
      redis.call('ZADD', k('reg', rec.gkey), rec.created, id)
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
  rec.status = to
  rec.owner = owner
end

-- appends a history entry (written at the end of the script, in order)
local function history(id, status, owner, actor, ctx)
  local list = HIST[id]
  if not list then
    list = {}
    HIST[id] = list
    HIST_IDS[#HIST_IDS + 1] = id
  end
  list[#list + 1] = '["' .. status .. '",' .. q(owner) .. ',' .. q(actor) .. ',' .. NOW_S .. ',' .. q(ctx) .. ']'
end

local function flush_history()
  for _, id in ipairs(HIST_IDS) do
    redis.call('RPUSH', k('hist', id), unpack(HIST[id]))
  end
  HIST, HIST_IDS = {}, {}
end

local function add_edge(parent_inv, parent_call, callee)
  redis.call('HINCRBY', k('edges', parent_call), callee, 1)
  redis.call('RPUSH', k('iedges', parent_inv), parent_call, callee)
  if NO_EDGES[parent_inv] ~= false then
    -- flag the caller so that removing its edges is free when it has none
    redis.call('HSET', k('inv', parent_inv), 'edges', '1')
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

local transition

-- One status transition (store::engine::transition) of a loaded record:
-- check, write, history, then what the new status implies.
local function apply(rec, to, actor, ctx, extra)
  local from = rec.status
  local owner = next_owner(rec, to, actor)
  put_status(rec, to, owner, extra)
  history(rec.id, to, owner, actor, ctx)
  if OWNED_RUNNING[from] and not OWNED_RUNNING[to] then
    -- the running key is free again: re-route what was parked on it
    if rec.rkey then
      local ck = k('ctl', rec.rkey)
      local parked = redis.call('LRANGE', ck, 0, -1)
      if #parked > 0 then
        redis.call('DEL', ck)
        for _, pid in ipairs(parked) do
          local prec = load(pid)
          if prec and ALLOWED[prec.status .. '>' .. ST.REROUTED] then
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
transition = function(id, to, actor, ctx, during)
  local rec = load(id)
  if not rec then
    fail('NOT_FOUND', id, during or ('while setting it ' .. to))
  end
  return apply(rec, to, actor, ctx)
end

-- Runs `main`, writes the history, publishes the notifications and shapes
-- the reply: {'OK'|'ERR', enqueued 0/1, {ids that became final}, result | failure}.
local function run(main)
  local ok, res = pcall(main)
  flush_history()
  if ENQUEUED then
    redis.call('PUBLISH', P .. 'work', '1')
  end
  for _, id in ipairs(FINALS) do
    redis.call('PUBLISH', P .. 'final', id)
  end
  if ok then
    return {'OK', ENQUEUED and 1 or 0, FINALS, res or 0}
  end
  if type(res) == 'table' and res.pynenc then
    return {'ERR', ENQUEUED and 1 or 0, FINALS, res.pynenc}
  end
  error(res, 0)
end
