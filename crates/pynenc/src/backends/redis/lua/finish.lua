-- finish (store::engine::finish): result or error, SUCCESS / FAILED / RETRY
-- (queued again). ARGV[2] = id, ARGV[3] = runner, ARGV[4] = 'S' | 'R' | 'F',
-- ARGV[5] = the result or the error JSON. Returns the status set.

local function main()
  local id, runner, kind, payload = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
  local to = ST.FAILED
  if kind == 'S' then
    to = ST.SUCCESS
  elseif kind == 'R' then
    to = ST.RETRY
  end
  local rec = load(id)
  if not rec then
    fail('NOT_FOUND', id, 'while finishing it')
  end
  if REPLAY and rec.status == to and already_done(id, to, runner) then
    return to
  end
  -- check first, so that a refused finish writes nothing
  next_owner(rec, id, to, runner)
  if kind == 'S' then
    redis.call('HSET', rec.key, 'result', payload)
  else
    redis.call('HSET', rec.key, 'error', payload)
  end
  transition(id, to, runner, false)
  if to == ST.RETRY then
    redis.call('HINCRBY', rec.key, 'retries', 1)
    enqueue(id)
  end
  return to
end
