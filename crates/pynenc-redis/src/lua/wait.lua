-- waiting_for_results (store::engine::waiting_for_results): records that
-- ARGV[2] ('' = an external caller) waits for ARGV[3..] (field `waited`,
-- and `blocking` while available); final ones are ignored, a missing one is
-- NOT_FOUND (and nothing is recorded). The field `waited` lists the
-- waiters (see lib.lua); an invocation that waits is also kept in
-- `wo:{waiter}` (what it waits on), until the waited one is final or
-- deleted, or the waiter is (its field `wo` says it has waits to clean up).

local function main()
  local waiter_inv = nz(ARGV[2])
  local open = {}
  for i = 3, #ARGV do
    local id = ARGV[i]
    local key = k('inv', id)
    -- {status, created, waited}
    local v = redis.call('HMGET', key, 'status', 'created', 'waited')
    if not v[1] then
      fail('NOT_FOUND', id, 'while registering a wait for it')
    end
    if not ST[v[1]] then
      fail('CORRUPT', key, 'status', v[1])
    end
    if not FINAL[v[1]] then
      v[4], v[5] = id, key
      open[#open + 1] = v
    end
  end
  -- the wait graph only links invocations that exist
  local graph = waiter_inv and #open > 0 and redis.call('HEXISTS', k('inv', waiter_inv), 'status') == 1
  local ids = {}
  local token = graph and waiter_inv or '(external)'
  for _, v in ipairs(open) do
    local waited = v[3]
    if not waited or waited == '-' then
      redis.call('HSET', v[5], 'waited', token, 'x', '1')
    elseif waited ~= token and not string.find(' ' .. waited .. ' ', ' ' .. token .. ' ', 1, true) then
      redis.call('HSET', v[5], 'waited', waited .. ' ' .. token)
    end
    if not waited and AVAILABLE[v[1]] then
      redis.call('ZADD', P .. 'blocking', v[2], v[4])
    end
    if graph then
      ids[#ids + 1] = v[4]
    end
  end
  if #ids > 0 then
    call_chunked('SADD', k('wo', waiter_inv), ids)
    redis.call('HSET', k('inv', waiter_inv), 'wo', '1', 'x', '1')
  end
  return #open
end
