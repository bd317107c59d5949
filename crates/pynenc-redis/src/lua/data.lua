-- The data store (pynenc_store::DataStore, store::engine::data): large
-- values kept once per content digest, each with the invocations that
-- refer to it and the time it was last claimed. ARGV[2] = operation:
--   'claim' (key n id*)*            for each claim, in order: whether its
--                                   value is stored; a stored one gets the
--                                   ids as references and is claimed now.
--                                   Returns {1|0, ...}
--   'put' (key text n id*)*         stores each value unless its digest is
--                                   stored already (then the text is left
--                                   as it is), adds the ids as references
--                                   and claims it now. Returns 1
--   'sweep' before batch budget     one section of the sweep: the values
--                                   claimed before min(before, now), oldest
--                                   first, at most `batch` of them and no
--                                   further value once `budget` references
--                                   were checked. References to invocations
--                                   that no longer exist are forgotten; a
--                                   value left with none is deleted, any
--                                   other is claimed now. Returns
--                                   {examined, removed, bytes freed, 1 if
--                                   values may be left, the bound used}
-- `key` is the digest in 64 hex digits (DataRef::key). Keys: `data:{key}`
-- (the text), `dref:{key}` (set of invocation ids), `dclaim` (sorted set:
-- key -> claim time, µs) and `dusage` (hash: `values`, `bytes`, `refs`).
-- An invocation exists while its hash `inv:{id}` has a status. The whole
-- section is one call, so a claim never falls between a value's check and
-- its deletion.

-- the counters' changes of this call, written once at its end
local D_VALUES, D_BYTES, D_REFS

-- adds ARGV[first] .. ARGV[first + n - 1] as references of `key` (counted
-- when new)
local function refer(key, first, n)
  local last = first + n - 1
  for i = first, last, CHUNK do
    D_REFS = D_REFS + rcall('SADD', k('dref', key), unpack(ARGV, i, math.min(i + CHUNK - 1, last)))
  end
end

-- claims the value `key` with its references (ARGV[first ..], n of them);
-- false when it is not stored
local function claim(key, first, n)
  if rcall('EXISTS', k('data', key)) == 0 then
    return false
  end
  rcall('ZADD', P .. 'dclaim', NOW_S, key)
  refer(key, first, n)
  return true
end

-- The claims of the call, read before anything is written (a malformed
-- call fails without effect): {key, text (puts), first id, n} each.
-- `texts`: each key is followed by its value's text.
local function parse(texts)
  local out, i, skip = {}, 3, texts and 1 or 0
  while i <= #ARGV do
    local at = i + 1 + skip
    local n = tonumber(ARGV[at])
    if not n or n < 0 or at + n > #ARGV then
      fail('BAD_ARGS', ARGV[2], tostring(ARGV[at]))
    end
    out[#out + 1] = {ARGV[i], texts and ARGV[i + 1], at + 1, n}
    i = at + 1 + n
  end
  return out
end

local function claims()
  local out = {}
  for i, c in ipairs(parse(false)) do
    out[i] = claim(c[1], c[3], c[4]) and 1 or 0
  end
  return out
end

local function puts()
  for _, c in ipairs(parse(true)) do
    local key, text = c[1], c[2]
    if not claim(key, c[3], c[4]) then
      rcall('SET', k('data', key), text)
      rcall('ZADD', P .. 'dclaim', NOW_S, key)
      D_VALUES, D_BYTES = D_VALUES + 1, D_BYTES + #text
      refer(key, c[3], c[4])
    end
  end
  return 1
end

local function sweep()
  local bound = math.min(tonumber(ARGV[3]) or 0, NOW)
  local batch, budget = tonumber(ARGV[4]) or 0, tonumber(ARGV[5]) or 0
  local keys = rcall('ZRANGEBYSCORE', P .. 'dclaim', '-inf', '(' .. fmt(bound), 'LIMIT', 0, batch)
  local examined, removed, freed, checked = 0, 0, 0, 0
  for _, key in ipairs(keys) do
    if examined > 0 and checked >= budget then
      break
    end
    examined = examined + 1
    local rk = k('dref', key)
    local refs = rcall('SMEMBERS', rk)
    checked = checked + #refs
    local gone = {}
    for _, id in ipairs(refs) do
      if rcall('HEXISTS', k('inv', id), 'status') == 0 then
        gone[#gone + 1] = id
      end
    end
    if #gone == #refs then
      local dk = k('data', key)
      local len = rcall('STRLEN', dk)
      if rcall('UNLINK', dk) == 1 then
        D_VALUES, D_BYTES = D_VALUES - 1, D_BYTES - len
        removed, freed = removed + 1, freed + len
      end
      rcall('DEL', rk)
      rcall('ZREM', P .. 'dclaim', key)
      D_REFS = D_REFS - #refs
    else
      if #gone > 0 then
        call_chunked('SREM', rk, gone)
        D_REFS = D_REFS - #gone
      end
      rcall('ZADD', P .. 'dclaim', NOW_S, key)
    end
  end
  local more = (#keys >= batch or examined < #keys) and 1 or 0
  return {examined, removed, freed, more, fmt(bound)}
end

-- writes the counters' changes (a counter back at 0 goes)
local function count()
  local uk = P .. 'dusage'
  for field, by in pairs({values = D_VALUES, bytes = D_BYTES, refs = D_REFS}) do
    if by ~= 0 and rcall('HINCRBY', uk, field, fmt(by)) <= 0 then
      rcall('HDEL', uk, field)
    end
  end
end

local function main()
  D_VALUES, D_BYTES, D_REFS = 0, 0, 0
  local op, res = ARGV[2], nil
  if op == 'claim' then
    res = claims()
  elseif op == 'put' then
    res = puts()
  elseif op == 'sweep' then
    res = sweep()
  else
    fail('BAD_OP', op)
  end
  count()
  return res
end
