-- waiting_for_results (store::engine::waiting_for_results): records that
-- ARGV[2] ('' = an external caller) waits for ARGV[4..] (field `waited`,
-- and `blocking` while available); final ones are ignored, a missing one is
-- NOT_FOUND (and nothing is recorded). The field `waited` lists the
-- waiters (see lib.lua); an invocation that waits is also kept in
-- `wo:{waiter}` (what it waits on), until the waited one is final or
-- deleted, or the waiter is (its field `wo` says it has waits to clean up).
-- ARGV[3] = a runner ('' = none): then the waiter is also set `PAUSED` by
-- it in the same step, unless every waited invocation is final already
-- (store::engine::pause_for_results: nothing recorded then).
-- Returns the number of waited invocations not final.

local function main()
  local waiter_inv, pause_by = nz(ARGV[2]), nz(ARGV[3])
  if REPLAY and pause_by then
    -- the first attempt's reply was lost: it is paused already
    local rec = load(waiter_inv)
    if rec and rec.status == ST.PAUSED and already_done(rec, ST.PAUSED, pause_by) then
      return 1
    end
  end
  -- a pause that would be refused is refused before anything is written
  local paused
  if pause_by then
    paused = load(waiter_inv)
    if not paused then
      fail('NOT_FOUND', waiter_inv, 'while pausing it to wait')
    end
    next_owner(paused, ST.PAUSED, pause_by)
  end
  local open = {}
  for i = 4, #ARGV do
    local id = ARGV[i]
    local key = k('inv', id)
    -- {status, created, waited}
    local v = rcall('HMGET', key, 'status', 'created', 'waited')
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
  local graph = waiter_inv and #open > 0 and rcall('HEXISTS', k('inv', waiter_inv), 'status') == 1
  local ids = {}
  local token = graph and waiter_inv or '(external)'
  for _, v in ipairs(open) do
    local waited = v[3]
    if not waited or waited == '-' then
      rcall('HSET', v[5], 'waited', token, 'x', '1')
    elseif waited ~= token and not string.find(' ' .. waited .. ' ', ' ' .. token .. ' ', 1, true) then
      rcall('HSET', v[5], 'waited', waited .. ' ' .. token)
    end
    if not waited and AVAILABLE[v[1]] then
      rcall('ZADD', P .. 'blocking', v[2], v[4])
    end
    if graph then
      ids[#ids + 1] = v[4]
    end
  end
  if #ids > 0 then
    call_chunked('SADD', k('wo', waiter_inv), ids)
    rcall('HSET', k('inv', waiter_inv), 'wo', '1', 'x', '1')
  end
  if paused and #open > 0 then
    apply(paused, ST.PAUSED, pause_by, false)
  end
  return #open
end
