-- Shared helpers of every pynenc script. The Rust side prepends a prelude
-- generated from `InvocationStatus` (ST, ALLOWED, REQUIRES_OWNER, OWNERSHIP,
-- FINAL, OWNED_RUNNING, AVAILABLE, INITIAL) and appends the script's own body,
-- which defines `main` and ends with `return run(main)`.
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

local function jstr(s)
  if s then
    return cjson.encode(s)
  end
  return 'null'
end

-- the fields of an invocation that transitions need; nil if it does not exist
local function load(id)
  local key = k('inv', id)
  local v = redis.call('HMGET', key, 'status', 'owner', 'created', 'gkey', 'rkey', 'waited')
  if not v[1] then
    return nil
  end
  if not ALLOWED[v[1]] then
    fail('CORRUPT', key, 'status', v[1])
  end
  return {key = key, status = v[1], owner = nz(v[2]), created = v[3], gkey = nz(v[4]), rkey = nz(v[5]), waited = nz(v[6])}
end

-- the stored record of an invocation, as the client decodes it
local function record(id)
  local r = redis.call('HMGET', k('inv', id), 'call', 'parent', 'created', 'sched', 'gkey', 'graise', 'rkey', 'reroute')
  table.insert(r, 1, id)
  return r
end

-- the owner after `actor` sets `to`, or a TRANSITION failure (nothing written)
local function next_owner(rec, id, to, actor)
  if not ALLOWED[rec.status][to] or (REQUIRES_OWNER[rec.status][to] and rec.owner ~= actor) then
    fail('TRANSITION', id, rec.status, rec.owner or false, to, actor)
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

-- writes a checked status and keeps every index in step with it
local function put_status(id, rec, to, owner)
  local key, old = rec.key, rec.status
  if owner then
    redis.call('HSET', key, 'status', to, 'owner', owner, 'status_at', NOW_S)
  else
    redis.call('HSET', key, 'status', to, 'status_at', NOW_S)
    if rec.owner then
      redis.call('HDEL', key, 'owner')
    end
  end
  if FINAL[to] then
    redis.call('HSET', key, 'final_at', NOW_S)
    redis.call('ZADD', P .. 'finals', NOW_S, id)
  end
  local was_owned, is_owned = OWNED_RUNNING[old] or false, OWNED_RUNNING[to] or false
  if is_owned then
    redis.call('ZADD', P .. 'owned', NOW_S, id)
  elseif was_owned then
    redis.call('ZREM', P .. 'owned', id)
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

local function history(id, status, owner, actor, ctx)
  redis.call('RPUSH', k('hist', id),
    '[' .. cjson.encode(status) .. ',' .. jstr(owner) .. ',' .. cjson.encode(actor) .. ',' .. NOW_S .. ',' .. jstr(ctx) .. ']')
end

local function add_edge(parent_inv, parent_call, callee)
  redis.call('HINCRBY', k('edges', parent_call), callee, 1)
  redis.call('RPUSH', k('iedges', parent_inv), parent_call, callee)
end

local function remove_edges_of(id)
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

local function release_waited(id, rec)
  if rec.waited then
    redis.call('HDEL', rec.key, 'waited')
    redis.call('DEL', k('waiters', id))
    redis.call('ZREM', P .. 'blocking', id)
    rec.waited = nil
  end
end

-- One status transition (store::engine::transition): check, write, history,
-- then what the new status implies. Returns the updated fields.
local transition
transition = function(id, to, actor, ctx, during)
  local rec = load(id)
  if not rec then
    fail('NOT_FOUND', id, during or ('while setting it ' .. to))
  end
  local from = rec.status
  local owner = next_owner(rec, id, to, actor)
  put_status(id, rec, to, owner)
  history(id, to, owner, actor, ctx)
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
            transition(pid, ST.REROUTED, actor, false)
            enqueue(pid)
          end
        end
      end
    end
    remove_edges_of(id)
  end
  if FINAL[to] then
    release_waited(id, rec)
    remove_edges_of(id)
    FINALS[#FINALS + 1] = id
  end
  return rec
end

-- Runs `main`, publishes the notifications and shapes the reply:
-- {'OK'|'ERR', enqueued 0/1, {ids that became final}, result | failure}.
local function run(main)
  local ok, res = pcall(main)
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
