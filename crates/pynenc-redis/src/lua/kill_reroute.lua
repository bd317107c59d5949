-- kill_and_reroute: KILLED then REROUTED, queued again.
-- ARGV[2] = id, ARGV[3] = runner.

local function main()
  local id, runner = ARGV[2], ARGV[3]
  if REPLAY and already_done(load(id), ST.REROUTED, runner) then
    return 1
  end
  local rec = transition(id, ST.KILLED, runner, false)
  apply(rec, ST.REROUTED, runner, false)
  enqueue_front(id)
  return 1
end
