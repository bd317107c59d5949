-- set_status: one checked transition. ARGV[2] = id, ARGV[3] = status,
-- ARGV[4] = actor, ARGV[5] = execution context ('' = none), then the ids
-- whose outcomes come back with it (store::engine::resume_with_outcomes:
-- read first, so that an unknown one fails the step before it writes).
-- Returns {status, owner, {{status, result, error}...}}.

local function main()
  local id, to, actor, ctx = ARGV[2], ARGV[3], ARGV[4], nz(ARGV[5])
  local outcomes = {}
  for i = 6, #ARGV do
    local v = rcall('HMGET', k('inv', ARGV[i]), 'status', 'result', 'error')
    if not v[1] then
      fail('NOT_FOUND', ARGV[i], 'while reading its result')
    end
    outcomes[#outcomes + 1] = v
  end
  if REPLAY then
    local rec = load(id)
    if rec and rec.status == to and already_done(rec, to, actor) then
      return {rec.status, rec.owner or false, outcomes}
    end
  end
  local rec = transition(id, to, actor, ctx or false)
  return {rec.status, rec.owner or false, outcomes}
end
