-- langbench_wrk: what every langbench wrk script shares. A scenario's script
-- only says how to make request n of thread tid:
--
--   require("langbench_wrk").install(function(tid, n, nonce)
--     return wrk.format("GET", wrk.path .. "?n=" .. n)
--   end)
--
-- wrk is run with two script arguments: a nonce unique to the run and the
-- number of seconds to send. After that each connection stops sending
-- (delay()) so that calls in flight finish before wrk's own deadline: no call
-- is cut off. done() prints one JSON summary line (statuses counted by
-- response(), latency percentiles in microseconds, the send window: t0 the
-- first request sent, t1 the last answer, both CLOCK_MONOTONIC seconds, the
-- clock Python's time.monotonic() reads).
-- The harness puts this folder on LUA_PATH.
local M = {}

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } lb_timespec;
  int clock_gettime(int clk_id, lb_timespec *tp);
]]
local ts = ffi.new("lb_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

function M.install(make_request)
  local threads = {}

  function setup(thread)
    thread:set("tid", #threads)
    table.insert(threads, thread)
  end

  function init(args)
    nonce = args[1] or "lb"
    send_seconds = tonumber(args[2] or "1e9")
    counter, statuses = 0, {}
  end

  function delay()
    if send_until ~= nil and now() >= send_until then
      return 3600000 -- draining: send nothing more
    end
    return 0
  end

  function request()
    if first_sent == nil then
      first_sent = now()
      send_until = first_sent + send_seconds
    end
    counter = counter + 1
    return make_request(tid, counter, nonce)
  end

  function response(status, headers, body)
    local k = tostring(status)
    statuses[k] = (statuses[k] or 0) + 1
    last_answer = now()
  end

  function done(summary, latency, requests)
    local counts, sent, t0, t1 = {}, 0, nil, nil
    for _, thread in ipairs(threads) do
      for k, v in pairs(thread:get("statuses") or {}) do counts[k] = (counts[k] or 0) + v end
      sent = sent + (thread:get("counter") or 0)
      local a, b = thread:get("first_sent"), thread:get("last_answer")
      if a ~= nil and (t0 == nil or a < t0) then t0 = a end
      if b ~= nil and (t1 == nil or b > t1) then t1 = b end
    end
    local parts = {}
    for k, v in pairs(counts) do table.insert(parts, string.format('"%s":%d', k, v)) end
    local e = summary.errors
    io.write(string.format(
      '{"requests":%d,"sent":%d,"duration_us":%d,"window_s":%.6f,"t0":%.6f,"t1":%.6f,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"status_counts":{%s},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, sent, summary.duration, (t0 and t1) and (t1 - t0) or 0, t0 or 0, t1 or 0, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ","),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean))
  end
end

return M
