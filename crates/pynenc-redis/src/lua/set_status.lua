-- set_status: one checked transition. ARGV[2] = id, ARGV[3] = status,
-- ARGV[4] = actor, ARGV[5] = execution context ('' = none).
-- Returns {status, owner}.

local function main()
  local id, to, actor, ctx = ARGV[2], ARGV[3], ARGV[4], nz(ARGV[5])
  if REPLAY then
    local rec = load(id)
    if rec and rec.status == to and already_done(rec, to, actor) then
      return {rec.status, rec.owner or false}
    end
  end
  local rec = transition(id, to, actor, ctx or false)
  return {rec.status, rec.owner or false}
end
