-- The recovery step (store::engine::recover). ARGV[2] = actor,
-- ARGV[3] = dead_after µs, ARGV[4] = max_pending µs, ARGV[5] = the error
-- JSON of a cancel by the actor. Returns the ids recovered: re-routed at
-- the head of the queue, or CANCELLED when a cancel was requested for
-- them (field `cxl`).

local function main()
  local actor, dead, maxp, cancelled = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
  local claims = rcall('ZRANGEBYSCORE', P .. 'owned', '-inf', '(' .. fmt(NOW - math.min(dead, maxp)),
    'WITHSCORES', 'LIMIT', 0, STEP_BATCH)
  local alive = {}
  local recovered = {}
  for i = 1, #claims - 1, 2 do
    local id, at = claims[i], tonumber(claims[i + 1])
    local rec = load(id)
    if rec then
      local stuck = rec.status == ST.PENDING and at < NOW - maxp
      local lost = false
      if at < NOW - dead then
        local owner = rec.owner or ''
        local a = alive[owner]
        if a == nil then
          local beat = rcall('HGET', P .. 'heartbeats', owner)
          a = (beat and tonumber(beat) >= NOW - dead) or false
          alive[owner] = a
        end
        lost = not a
      end
      if stuck or lost then
        local via = ST.RUNNING_RECOVERY
        if rec.status == ST.PENDING then
          via = ST.PENDING_RECOVERY
        end
        apply(rec, via, actor, false)
        reroute_unless_cancelled(rec, actor, cancelled)
        recovered[#recovered + 1] = id
      end
    end
  end
  return recovered
end
