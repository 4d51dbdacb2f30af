-- fire.lua: wrk script for events-kafka (see harness/drivers/lua/langbench_wrk.lua).
-- Request n of thread t is POST /fire/<t * 10^9 + n> with the reason
-- "<nonce>-<t>-<n>": unique across the run, so every event in the topic can
-- be matched to one request.
require("langbench_wrk").install(function(tid, n, nonce)
  local body = '{"reason":"' .. nonce .. '-' .. tid .. '-' .. n .. '"}'
  return wrk.format("POST", "/fire/" .. (tid * 1000000000 + n), { ["Content-Type"] = "application/json" }, body)
end)
