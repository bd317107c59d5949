-- After a pick whose reply was lost: invocations PENDING for ARGV[2] claimed
-- in the last ARGV[3] µs go back to REROUTED and are queued again (a runner
-- never runs what it did not receive). Returns how many.

local function main()
  local runner = ARGV[2]
  local since = NOW - tonumber(ARGV[3])
  local recent = redis.call('ZRANGEBYSCORE', P .. 'owned', fmt(since), '+inf')
  local n = 0
  for _, id in ipairs(recent) do
    local rec = load(id)
    if rec and rec.status == ST.PENDING and rec.owner == runner then
      transition(id, ST.REROUTED, runner, false)
      enqueue(id)
      n = n + 1
    end
  end
  return n
end
