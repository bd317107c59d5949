-- Deleting final invocations with everything attached to them, keeping
-- every index in step. ARGV[2] = operation:
--   'ids' id...                        delete_final: those of the ids that
--                                      are final; returns how many
--   'retention' keep_success keep_failed keep_cancelled max_final max
--                                      one section of auto_purge
--                                      (store::engine::auto_purge): each
--                                      final status after its own time (µs;
--                                      SUCCESS and CONCURRENCY_CONTROLLED_FINAL
--                                      share keep_success), then the oldest
--                                      ends beyond max_final ('' = no
--                                      limit); at most `max` in all.
--                                      Returns how many.
-- The ends come from the logs `finals:{status}` ('time id id ...', in time
-- order); an id deleted meanwhile by `ids` is skipped there. The log
-- `finals` of a build before them is purged with the longest retention.

local DEL_FIELDS = {'status', 'tc', 'parent', 'gkey', 'rkey', 'waited', 'wo', 'cxl', 'ekind', 'edges', 'rn', 'wd'}

-- the task ids whose `idx:` set lost members (the set `tasks` forgets
-- those left empty once the section is written)
local TOUCHED

-- deletes one invocation and its entries in every index; 1 if it existed
local function delete_invocation(id)
  local key = k('inv', id)
  local v = rcall('HMGET', key, unpack(DEL_FIELDS))
  local status = v[1]
  if not status then
    return 0
  end
  local task, parent = task_of({key = key, tc = nz(v[2])}), nz(v[3])
  local gkey, rkey, wo, cxl, ekind = nz(v[4]), nz(v[5]), nz(v[7]), nz(v[8]), nz(v[9])
  zrem_later(tkey('idx', task), id)
  TOUCHED[task] = true
  if parent then
    zrem_later(k('par', parent), id)
  end
  if status == ST.FAILED and ekind then
    hincr_later(tkey('fk', task), ekind, -1)
  end
  if OWNED_RUNNING[status] then
    zrem_later(P .. 'owned', id)
    if rkey then
      rcall('SREM', k('run', rkey), id)
    end
  end
  if status == ST.SCHEDULED then
    zrem_later(P .. 'scheduled', id)
  end
  if v[6] then
    zrem_later(P .. 'blocking', id)
    release_waits(id, v[6])
  end
  if gkey then
    zrem_later(k('reg', gkey), id)
    zrem_later(k('gact', gkey), id)
    zrem_later(k('gok', gkey), id)
  end
  if wo then
    -- what it waited on no longer lists it as a waiter
    release_own_waits(id)
  end
  if cxl then
    rcall('SREM', k('cxl', cxl), id)
  end
  remove_edges_of(id, {edges = nz(v[10])})
  if v[11] then
    rcall('DEL', k('reuse', id))
  end
  if v[12] then
    rcall('DEL', k('wfd', id))
  end
  rcall('DEL', key)
  return 1
end

-- writes the section's index changes, then forgets the tasks left without
-- invocations and totals
local function finish_section()
  flush()
  for task in pairs(TOUCHED) do
    if rcall('ZCARD', tkey('idx', task)) == 0 and rcall('EXISTS', tkey('tot', task), tkey('totl', task)) == 0 then
      rcall('SREM', P .. 'tasks', task)
    end
  end
  TOUCHED = {}
end

-- The head of the log of one final status: its entries are read in pages
-- and taken id by id; `done` entries are used up, the ids of entry
-- `done + 1` before `skip` are taken.
local function log_head(key)
  return {key = key, page = {}, at = 1, done = 0, skip = 0, ids = nil, time = nil}
end

-- the time and ids of the current entry of a log head, or nil at its end
local function head_entry(h)
  while true do
    if h.ids then
      if h.skip < #h.ids then
        return h.time
      end
      -- this entry is used up
      h.done, h.skip, h.ids, h.at = h.done + 1, 0, nil, h.at + 1
    end
    if h.at > #h.page then
      h.page = rcall('LRANGE', h.key, h.done, h.done + 99)
      h.at = 1
      if #h.page == 0 then
        return nil
      end
    end
    local e = h.page[h.at]
    local ids = {}
    for word in string.gmatch(e, '%S+') do
      ids[#ids + 1] = word
    end
    h.time = tonumber(table.remove(ids, 1)) or 0
    h.ids = ids
  end
end

-- writes back what was taken from a log: used-up entries go, the ids taken
-- from a partly used entry go from it
local function trim_head(h)
  if h.ids and h.skip > 0 then
    local rest = {}
    for i = h.skip + 1, #h.ids do
      rest[#rest + 1] = h.ids[i]
    end
    rcall('LSET', h.key, h.done, fmt(h.time) .. ' ' .. table.concat(rest, ' '))
  end
  if h.done > 0 then
    rcall('LTRIM', h.key, h.done, -1)
  end
end

-- Deletes up to `max` invocations of the logs `keys` that ended before
-- `before` (nil: any time), earliest end first; returns how many.
local function purge_logs(keys, before, max)
  local heads = {}
  for i, key in ipairs(keys) do
    heads[i] = log_head(key)
  end
  local deleted = 0
  while deleted < max do
    local best, at = nil, nil
    for _, h in ipairs(heads) do
      local t = head_entry(h)
      if t and (not before or t < before) and (not at or t < at) then
        best, at = h, t
      end
    end
    if not best then
      break
    end
    best.skip = best.skip + 1
    deleted = deleted + delete_invocation(best.ids[best.skip])
  end
  for _, h in ipairs(heads) do
    head_entry(h)
    trim_head(h)
  end
  finish_section()
  return deleted
end

-- every final status (built when the library loads, where only the
-- language itself is available: no ipairs)
local FINAL_LIST = {}
for i = 1, #ALL_ST do
  if FINAL[ALL_ST[i]] then
    FINAL_LIST[#FINAL_LIST + 1] = ALL_ST[i]
  end
end

-- the log of the ends of a final status
local function log_of(status)
  return P .. 'finals:' .. status
end

local function retention()
  local max = tonumber(ARGV[7])
  local max_final = tonumber(ARGV[6])
  local keep_s, keep_f, keep_c = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  local groups = {
    {{log_of(ST.SUCCESS), log_of(ST.CONCURRENCY_CONTROLLED_FINAL)}, keep_s},
    {{log_of(ST.FAILED)}, keep_f},
    {{log_of(ST.CANCELLED)}, keep_c},
    -- the log of a build before the per-status logs (statuses unknown):
    -- kept as long as the longest retention
    {{P .. 'finals'}, math.max(keep_s, keep_f, keep_c)},
  }
  local deleted = 0
  for _, g in ipairs(groups) do
    if deleted >= max then
      break
    end
    deleted = deleted + purge_logs(g[1], NOW - g[2], max - deleted)
  end
  if max_final and deleted < max then
    local finals = 0
    for _, t in ipairs(rcall('SMEMBERS', P .. 'tasks')) do
      for _, st in ipairs(FINAL_LIST) do
        local b = BAND[st]
        finals = finals + rcall('ZCOUNT', tkey('idx', t), b, b)
      end
    end
    local excess = math.min(finals - max_final, max - deleted)
    if excess > 0 then
      local logs = {}
      for i, st in ipairs(FINAL_LIST) do
        logs[i] = log_of(st)
      end
      deleted = deleted + purge_logs(logs, nil, excess)
    end
  end
  return deleted
end

local function main()
  TOUCHED = {}
  local op = ARGV[2]
  if op == 'ids' then
    local deleted = 0
    for i = 3, #ARGV do
      local id = ARGV[i]
      local st = rcall('HGET', k('inv', id), 'status')
      if st and FINAL[st] then
        deleted = deleted + delete_invocation(id)
      end
    end
    finish_section()
    return deleted
  elseif op == 'retention' then
    return retention()
  end
  fail('BAD_OP', op)
end
