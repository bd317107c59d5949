-- The query indexes and the wait graph (part of the library: lib.lua,
-- index.lua and apply.lua are loaded as one text, in this order). The key
-- layout is in the crate documentation; `flush` (apply.lua) writes what
-- these helpers stage.

-- The bands of `idx:{task}` (its scores): the statuses an invocation
-- rests in on its usual way — queued, picked, running, paused — share band
-- 1, so only becoming final moves it; every other status has a band of its
-- own (its count is the band's size, a listing of it needs no filtering).
-- The invocations of band 1 in PENDING, RUNNING, PAUSED or RESUMED are
-- those of `owned` (few: what runners hold), REGISTERED the rest. Built
-- when the library loads (no ipairs there), from the prelude's statuses.
local BAND = {}
BAND[ST.REGISTERED] = 1
for i = 1, #ALL_ST do
  if OWNED_RUNNING[ALL_ST[i]] then
    BAND[ALL_ST[i]] = 1
  end
end
local BANDS = 1
for i = 1, #ALL_ST do
  if not BAND[ALL_ST[i]] then
    BANDS = BANDS + 1
    BAND[ALL_ST[i]] = BANDS
  end
end
-- the bands as the ZADD arguments (strings: no number formatting per member)
local BAND_ARG = {}
for i = 1, #ALL_ST do
  BAND_ARG[ALL_ST[i]] = '' .. BAND[ALL_ST[i]]
end

-- appends `a` (and `b` when given) to the list `map[key]`, made on first use
local function append_later(map, key, a, b)
  local l = map[key]
  if not l then
    l = {}
    map[key] = l
  end
  local n = #l
  l[n + 1] = a
  if b ~= nil then
    l[n + 2] = b
  end
end

-- stages the band of a new or moved invocation of `task`
local function move_later(task, band, id)
  append_later(MOVES, task, band, id)
end

-- stages the removal of `member` from the sorted set `key`
local function zrem_later(key, member)
  append_later(ZREMS, key, member)
end

-- stages the removal of `member` from the set `key`
local function srem_later(key, member)
  append_later(SREMS, key, member)
end

-- stages the addition of `member` to the sorted set `key`, or its move to
-- `sc` (score '0': a lex index)
local function zadd_later(key, member, sc)
  append_later(ZADDS, key, sc or '0', member)
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

-- The task totals, `tot:{task}` (codes of pynenc_model::TotalKey, from
-- the prelude): they only grow, and a retention purge leaves them. A call
-- appends what it adds to a task's totals to the list `totl:{task}` as one
-- entry ('code n code n ...': one command, where a hash takes one per
-- code); the entry that makes the list TOTALS_FOLDED_AT long folds it into
-- the hash, and a reader adds what the list holds.
local TOTALS_FOLDED_AT = 32

-- code -> n: the pending entries of a task's totals (`totl:{task}`) added
-- to `into`
local function pending_totals(task, into)
  for _, e in ipairs(rcall('LRANGE', tkey('totl', task), 0, -1)) do
    local code
    for word in string.gmatch(e, '%S+') do
      if code then
        into[code] = (into[code] or 0) + (tonumber(word) or 0)
        code = nil
      else
        code = word
      end
    end
  end
  return into
end

-- moves the pending entries of a task's totals into its hash
local function fold_totals(task)
  local key = tkey('tot', task)
  for code, n in pairs(pending_totals(task, {})) do
    if n ~= 0 then
      rcall('HINCRBY', key, code, fmt(n))
    end
  end
  rcall('DEL', tkey('totl', task))
end

-- the totals staged for `task` (per code)
local function tots_of(task)
  local t = TOTS[task]
  if not t then
    t = {}
    TOTS[task] = t
  end
  return t
end

-- stages one more of the total `code` of `task`
local function add_total(task, code)
  local t = tots_of(task)
  t[code] = (t[code] or 0) + 1
end

-- stages a run of `us` microseconds of `task`: its bucket and the sum
local function add_run_time(task, us)
  local code = RT_CODES[#RT_CODES]
  for i = 1, #RT_BOUNDS do
    if us <= RT_BOUNDS[i] then
      code = RT_CODES[i]
      break
    end
  end
  local t = tots_of(task)
  t[code] = (t[code] or 0) + 1
  t[TOT_SUM] = (t[TOT_SUM] or 0) + us
end

-- the error kind of an invocation that becomes FAILED without a kind from
-- its end (a status set directly): the kind of the error stored before
local function stored_error_kind(rec)
  local ok, e = pcall(cjson.decode, rcall('HGET', rec.key, 'error') or '')
  if ok and type(e) == 'table' and type(e.kind) == 'string' then
    return e.kind
  end
  return nil
end

-- The wait graph: `wo:{waiter}` (a set: what it waits on) and the field
-- `waited` of the waited invocation (who waits on it: tokens separated by
-- spaces — invocation ids, `(external)` for a caller outside any
-- invocation, `-` once the waiters it had are gone — the field being set
-- at all is what puts an available invocation in `blocking`).
local NOT_IDS = {['(external)'] = true, ['-'] = true}

-- the waiting invocations of a `waited` field
local function waiters_of(waited)
  local out = {}
  for w in string.gmatch(waited or '', '%S+') do
    if not NOT_IDS[w] then
      out[#out + 1] = w
    end
  end
  return out
end

-- the waits on `id` are over (it is final or deleted): it leaves the
-- `wo:` set of each of its waiters (`waited`: its field)
local function release_waits(id, waited)
  if not string.find(waited, ' ', 1, true) then
    -- one waiter (the usual case)
    if not NOT_IDS[waited] then
      srem_later(P .. 'wo:' .. waited, id)
    end
    return
  end
  for _, w in ipairs(waiters_of(waited)) do
    srem_later(P .. 'wo:' .. w, id)
  end
end

-- the waits `id` made are over (it is final or deleted): it leaves the
-- field `waited` of each invocation it waited on, and its `wo:` set goes
local function release_own_waits(id)
  -- the whole set, which goes with it (a count above its size)
  for _, w in ipairs(rcall('SPOP', k('wo', id), 2147483647)) do
    local left = {}
    for t in string.gmatch(rcall('HGET', k('inv', w), 'waited') or '', '%S+') do
      if t ~= id then
        left[#left + 1] = t
      end
    end
    set_field(w, 'waited', #left > 0 and table.concat(left, ' ') or '-')
  end
end

-- not final and not SCHEDULED: what registration scope `active` reuses
local function is_active(status)
  return not FINAL[status] and status ~= ST.SCHEDULED
end
