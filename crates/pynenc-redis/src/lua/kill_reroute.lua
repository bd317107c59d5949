-- kill_and_reroute: KILLED then REROUTED, queued again at the head — or
-- CANCELLED when a cancel was requested for it.
-- ARGV[2] = id, ARGV[3] = runner, ARGV[4] = the error JSON of a cancel by
-- the runner.

local function main()
  local id, runner, cancelled = ARGV[2], ARGV[3], ARGV[4]
  if REPLAY then
    local rec = load(id)
    if already_done(rec, ST.REROUTED, runner) or already_done(rec, ST.CANCELLED, runner) then
      return 1
    end
  end
  local rec = transition(id, ST.KILLED, runner, false)
  reroute_unless_cancelled(rec, runner, cancelled)
  return 1
end
