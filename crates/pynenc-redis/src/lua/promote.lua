-- promote_scheduled: SCHEDULED invocations that are due become REGISTERED
-- and are queued. ARGV[2] = actor; ARGV[3], when given, is one invocation
-- to register now whatever its time (store::engine::run_scheduled_now: the
-- transition refuses one that is not SCHEDULED). Returns how many.

local function main()
  local actor = ARGV[2]
  if ARGV[3] then
    transition(ARGV[3], ST.REGISTERED, actor, false, 'while registering it now')
    enqueue(ARGV[3])
    return 1
  end
  local due = rcall('ZRANGEBYSCORE', P .. 'scheduled', '-inf', NOW_S, 'LIMIT', 0, STEP_BATCH)
  for _, id in ipairs(due) do
    transition(id, ST.REGISTERED, actor, false)
    enqueue(id)
  end
  return #due
end
