-- set_status: one checked transition. ARGV[2] = id, ARGV[3] = status,
-- ARGV[4] = actor, ARGV[5] = execution context ('' = none), then the ids
-- whose outcomes come back with it (store::engine::resume_with_outcomes:
-- read first, so that an unknown one fails the step before it writes).
-- Returns {status, owner, {{status, result, error}...}}.

local function main()
  local ids = {}
  for i = 6, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
  local rec, outcomes = set_with_outcomes(ARGV[2], ARGV[3], ARGV[4], nz(ARGV[5]), ids)
  return {rec.status, rec.owner or false, outcomes}
end
