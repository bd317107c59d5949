-- waiting_for_results (store::engine::waiting_for_results): records that
-- ARGV[2] ('' = an external caller) waits for ARGV[3..] (field `waited`,
-- and `blocking` while available); final ones are ignored, a missing one is
-- NOT_FOUND (and nothing is recorded).

local function main()
  local waiter = nz(ARGV[2]) or '(external)'
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
  for _, v in ipairs(open) do
    redis.call('HSET', v[5], 'waited', waiter, 'x', '1')
    if not v[3] and AVAILABLE[v[1]] then
      redis.call('ZADD', P .. 'blocking', v[2], v[4])
    end
  end
  return #open
end
