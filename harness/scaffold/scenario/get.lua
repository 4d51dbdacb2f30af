-- get.lua: wrk script for ${name} (see harness/drivers/lua/langbench_wrk.lua).
require("langbench_wrk").install(function(tid, n, nonce)
  return wrk.format("GET", wrk.path .. "?name=" .. tid .. "-" .. n)
end)
