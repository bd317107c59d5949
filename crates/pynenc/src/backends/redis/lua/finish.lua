-- finish (store::engine::finish) for a batch of invocations, each one on its
-- own: result or error, SUCCESS / FAILED / RETRY (queued again).
-- ARGV[2] = n, then per invocation: id, runner, 'S' | 'R' | 'F', the result
-- or the error JSON. Returns one {'OK', status} or {'ERR', failure...} per
-- invocation; a refused finish writes nothing.

local function finish_one(id, runner, kind, payload)
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
  -- apply checks before it writes anything
  apply(rec, to, runner, false, {kind == 'S' and 'result' or 'error', payload})
  if to == ST.RETRY then
    redis.call('HINCRBY', rec.key, 'retries', 1)
    enqueue(id)
  end
  return to
end

local function main()
  local n = tonumber(ARGV[2])
  local out = {}
  for i = 0, n - 1 do
    local b = 2 + i * 4
    local ok, res = pcall(finish_one, ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4])
    if ok then
      out[#out + 1] = {'OK', res}
    elseif type(res) == 'table' and res.pynenc then
      out[#out + 1] = {'ERR', res.pynenc}
    else
      error(res, 0)
    end
  end
  return out
end
