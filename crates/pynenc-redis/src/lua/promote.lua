-- promote_scheduled: SCHEDULED invocations that are due become REGISTERED
-- and are queued. ARGV[2] = actor. Returns how many.

local function main()
  local actor = ARGV[2]
  local due = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', NOW_S, 'LIMIT', 0, STEP_BATCH)
  for _, id in ipairs(due) do
    transition(id, ST.REGISTERED, actor, false)
    enqueue(id)
  end
  return #due
end
