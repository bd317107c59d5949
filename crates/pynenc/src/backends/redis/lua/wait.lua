-- waiting_for_results (store::engine::waiting_for_results): records that
-- ARGV[2] ('' = an external caller) waits for ARGV[3..]; final ones are
-- ignored, a missing one is NOT_FOUND (and nothing is recorded).

local function main()
  local waiter = ARGV[2]
  local open = {}
  for i = 3, #ARGV do
    local id = ARGV[i]
    local rec = load(id)
    if not rec then
      fail('NOT_FOUND', id, 'while registering a wait for it')
    end
    if not FINAL[rec.status] then
      rec.id = id
      open[#open + 1] = rec
    end
  end
  for _, rec in ipairs(open) do
    redis.call('SADD', k('waiters', rec.id), waiter)
    if not rec.waited then
      redis.call('HSET', rec.key, 'waited', '1')
      if AVAILABLE[rec.status] then
        redis.call('ZADD', P .. 'blocking', rec.created, rec.id)
      end
    end
  end
  return #open
end
