-- waiting_for_results (store::engine::waiting_for_results): records that
-- ARGV[2] ('' = an external caller) waits for ARGV[4..] (field `waited`,
-- and `blocking` while available); final ones are ignored, a missing one is
-- NOT_FOUND (and nothing is recorded). The field `waited` lists the
-- waiters (see lib.lua); an invocation that waits is also kept in
-- `wo:{waiter}` (what it waits on), until the waited one is final or
-- deleted, or the waiter is (its field `wo` says it has waits to clean up).
-- ARGV[3] = a runner ('' = none): then the waiter is also set `PAUSED` by
-- it in the same step, unless every waited invocation is final already
-- (store::engine::pause_for_results: nothing recorded then).
-- Returns the number of waited invocations not final.

local function main()
  local ids = {}
  for i = 4, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
  return wait_for(nz(ARGV[2]), nz(ARGV[3]), ids)
end
