-- cancel (store::engine::cancel). ARGV[2] = id, ARGV[3] = actor, ARGV[4] =
-- the error JSON of a cancel by the actor.
-- Returns {'F', status} when it is final already (nothing changes), {'R',
-- owner} when it runs: its owner is asked to stop it (`cxl:{owner}` and the
-- field `cxl`, kept until it is final, and `cxle`, the error naming the
-- actor, which it ends with; the recovery cancels it instead of re-routing
-- it), {'C'} when it waited and is CANCELLED now.

local function main()
  local id, actor, err = ARGV[2], ARGV[3], ARGV[4]
  local rec = load(id)
  if not rec then
    fail('NOT_FOUND', id, 'while cancelling it')
  end
  local status = rec.status
  if REPLAY and status == ST.CANCELLED and already_done(rec, ST.CANCELLED, actor) then
    return {'C'}
  end
  if FINAL[status] then
    return {'F', status}
  end
  if OWNED_RUNNING[status] then
    local owner = rec.owner
    if not owner then
      fail('CORRUPT', rec.key, 'owner', 'running without an owner')
    end
    if rec.cxl and rec.cxl ~= owner then
      -- asked before of an earlier owner (it was retried since)
      rcall('SREM', k('cxl', rec.cxl), id)
    end
    rcall('SADD', k('cxl', owner), id)
    stage(rec, 'cxl', owner)
    -- the error it ends with names who asked
    stage(rec, 'cxle', err)
    stage(rec, 'x', '1')
    rec.cxl = owner
    return {'R', owner}
  end
  -- waiting, or between two steps of the recovery: it ends here
  apply(rec, ST.CANCELLED, actor, false, 'error', err)
  return {'C'}
end
