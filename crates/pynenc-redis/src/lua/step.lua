-- One step of runners: ends of runs (store::engine::finish) then pick-ups
-- (store::engine::pick), as many of each as the caller passes (today the
-- client sends the ends a runner gathered, or one pick-up; a runner that
-- ends runs and picks new ones at once could send both in one step). Each
-- end and each pick-up is checked and applied on its own, and fails on its
-- own.
--
-- ARGV[2] = the runner, ARGV[3] = n, then per end: id, 'S' | 'R' |
-- 'F<error kind>' | 'C' (after '+' when the record has rarer fields: read
-- at once), the result or the error JSON, the run time in µs
-- ('' = not measured); then w, then per wait change of the runner's
-- waiting invocations: 'P' (pause) | 'N' (pause that takes one more
-- invocation, for the slot it frees, in the first pick-up, when it pauses)
-- | 'R' (resume), the waiter, the number
-- of waited ids and the ids (store::engine::runner_step: after the ends,
-- so that a resume reads the outcomes they wrote, refused with
-- STILL_WAITING unless all are final — a runner hands the slot of a run
-- that ends to the invocation that waited for it); then m, then
-- per pick-up: max, token (its slot among the runner's latest PICKS_KEPT,
-- a number, then '.' and what makes it unique), '1' to start, execution
-- context of RUNNING ('' = none).
-- Returns {{end outcome...}, {pick outcome...}, {wait outcome...}}: an end
-- outcome is the new status, or {'ERR', failure}; a pick outcome is
-- {'OK', {the picked invocations, four values each (`append_picked`)}, {corrupt keys}} or
-- {'ERR', failure}; a wait outcome is {'OK', the number of waited
-- invocations not final} for a pause, {'OK', {{status, result, error}...}}
-- for a resume, or {'ERR', failure}.
--
-- An end: result or error, SUCCESS / FAILED / RETRY (queued again) /
-- CANCELLED (the body stopped at a cancel request); a refused end writes
-- nothing. A pick-up: waited-on invocations first
-- (oldest first), then the queue; running concurrency; PENDING for the
-- runner, and RUNNING too when starting. The ids a pick-up hands out are
-- remembered per runner with its token (the latest PICKS_KEPT), so a
-- replay after a lost reply returns the same invocations instead of
-- claiming more, also when other steps of the runner ran since.

local function finish_one(id, runner, kind, payload, us)
  -- '+': the record has rarer fields (its pick-up replied them)
  local how = nil
  if string.byte(kind, 1) == 43 then
    how, kind = ALL, string.sub(kind, 2)
  end
  local code, to = kind, ST.SUCCESS
  if kind ~= 'S' then
    code = string.sub(kind, 1, 1)
    if code == 'R' then
      to = ST.RETRY
    elseif code == 'C' then
      to = ST.CANCELLED
    else
      to = ST.FAILED
    end
  end
  local rec = load(id, how)
  if not rec then
    fail('NOT_FOUND', id, 'while finishing it')
  end
  if (code == 'C' or code == 'R') and rec.cxl then
    -- a run that stops at a cancel, or that would be retried after one was
    -- asked, ends CANCELLED with the error naming who asked
    code, to = 'C', ST.CANCELLED
    payload = rcall('HGET', rec.key, 'cxle') or payload
  end
  if code == 'F' then
    -- counted per error kind (`fk:{task}`)
    rec.ekind = string.sub(kind, 2)
  end
  if REPLAY and rec.status == to and already_done(rec, to, runner) then
    if FINAL[to] then
      -- the first attempt's reply was lost: tell the waiters again
      FINALS[#FINALS + 1] = id
    end
    return to
  end
  -- apply checks before it writes anything
  apply(rec, to, runner, false, code == 'S' and 'result' or 'error', payload)
  us = tonumber(us)
  if us then
    add_run_time(task_of(rec), us)
  end
  if to == ST.RETRY then
    rcall('HINCRBY', rec.key, 'retries', 1)
    enqueue(id)
  end
  return to
end

-- how many of a runner's latest pick-ups a replay may find: more than its
-- steps in flight at once, each of which may lose its reply (a pick-up's
-- token starts with its slot, the runner's pick-ups counted modulo this)
local PICKS_KEPT = 64

-- the key that keeps what the pick-up `token` of the runner handed out:
-- one per slot, a later pick-up of the slot replacing it
local function last_pick_key(runner, token)
  local slot = tonumber(string.match(token, '^%d+')) or 0
  return k('lastpick', runner .. ':' .. (slot % PICKS_KEPT))
end

-- the ids the pick-up `token` of the runner handed out, if its slot still
-- keeps them
local function picked_before(last_key, token)
  local last = rcall('GET', last_key)
  local prefix = token .. ' '
  if last and string.sub(last, 1, #prefix) == prefix then
    return string.sub(last, #prefix + 1)
  end
  return nil
end

local function pick_one(runner, max, token, start, ctx)
  local last_key = last_pick_key(runner, token)
  local picked, corrupt, ids = {}, {}, {}
  if REPLAY then
    local last = picked_before(last_key, token)
    if last then
      for id in string.gmatch(last, '%S+') do
        local v = rcall('HMGET', k('inv', id), 'status', 'owner')
        if v[2] == runner and OWNED_RUNNING[v[1]] then
          local r = record(id)
          append_picked(picked, id, r[2], r[4], nz(r[3]), nz(r[5]), nz(r[6]), nz(r[7]), nz(r[8]), nz(r[9]),
            nz(r[10]), nz(r[11]))
        end
      end
      return picked, corrupt
    end
  end
  if max <= 0 then
    return picked, corrupt
  end
  local function try_claim(id)
    local rec = read(id, FULL)
    if not rec then
      return -- purged while queued: a stale id
    end
    if not ST[rec.status] then
      corrupt[#corrupt + 1] = rec.key
      return
    end
    if not AVAILABLE[rec.status] then
      return
    end
    if rec.rkey and rcall('SCARD', k('run', rec.rkey)) > 0 then
      if rec.reroute then
        apply(rec, ST.CONCURRENCY_CONTROLLED, runner, false)
        rcall('RPUSH', k('ctl', rec.rkey), id)
      else
        apply(rec, ST.CONCURRENCY_CONTROLLED_FINAL, runner, false)
      end
      return
    end
    apply(rec, ST.PENDING, runner, false)
    if start then
      apply(rec, ST.RUNNING, runner, ctx or false)
    end
    ids[#ids + 1] = id
    append_picked(picked, id, rec.call, rec.created, rec.parent, rec.sched, rec.gkey, rec.graise, rec.rkey,
      rec.reroute and '1' or nil, rec.rerun, rec.gscope)
  end
  local cands = rcall('ZRANGE', P .. 'blocking', 0, fmt(max - 1))
  while true do
    for c = 1, #cands do
      if #ids >= max then
        break
      end
      try_claim(cands[c])
    end
    if #ids >= max then
      break
    end
    cands = rcall('LPOP', P .. 'queue', fmt(max - #ids))
    if not cands then
      break
    end
  end
  if #ids > 0 then
    rcall('SET', last_key, token .. ' ' .. table.concat(ids, ' '), 'EX', 600)
  end
  return picked, corrupt
end

-- a failure of one end or pick-up, for its own outcome
local function failed(res)
  if type(res) == 'table' and res.pynenc then
    return {'ERR', res.pynenc}
  end
  error(res, 0)
end

local function main()
  local runner = ARGV[2]
  local i = 3
  local n = tonumber(ARGV[i])
  local ends = {}
  for e = 1, n do
    local ok, res = pcall(finish_one, ARGV[i + 1], runner, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
    i = i + 4
    ends[e] = ok and res or failed(res)
  end
  i = i + 1
  local w = tonumber(ARGV[i])
  local waits = {}
  -- the slots of the pauses that take the next invocation (the waits read
  -- what the ends staged through the records this call loaded)
  local freed = 0
  for c = 1, w do
    local kind, waiter, cnt = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    local ids = {}
    for j = 1, cnt do
      ids[j] = ARGV[i + 3 + j]
    end
    i = i + 3 + cnt
    local ok, res, outcomes
    if kind ~= 'R' then
      ok, res = pcall(wait_for, waiter, runner, ids)
      if ok and kind == 'N' and res > 0 then
        freed = freed + 1
      end
    else
      ok, res, outcomes = pcall(set_with_outcomes, waiter, ST.RESUMED, runner, nil, ids, true)
      if ok then
        res = outcomes
      end
    end
    waits[c] = ok and {'OK', res} or failed(res)
  end
  i = i + 1
  local m = tonumber(ARGV[i])
  local picks = {}
  for p = 1, m do
    local ok, picked, corrupt = pcall(pick_one, runner, tonumber(ARGV[i + 1]) + (p == 1 and freed or 0), ARGV[i + 2],
      ARGV[i + 3] == '1', nz(ARGV[i + 4]))
    i = i + 4
    picks[p] = ok and {'OK', picked, corrupt} or failed(picked)
  end
  return {ends, picks, waits}
end
