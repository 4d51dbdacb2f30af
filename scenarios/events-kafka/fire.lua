-- fire.lua: wrk script for events-kafka.
--
--   wrk -t1 -c32 -d10s --timeout 10s -s fire.lua URL -- <nonce> <fire_seconds>
--
-- Each request is POST /fire/<id> with {"reason":"<nonce>-<thread>-<n>"}: a
-- reason unique across the run, so that every event in the topic can be
-- matched to one request. Requests are sent for <fire_seconds>; after that
-- each connection waits (delay()) until wrk's own deadline, so the calls in
-- flight finish inside the run and none is cut off: the count of 200 answers
-- is then exactly the number of events the service produced.
-- done() prints one JSON object (the driver reads the last line of stdout).

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

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  nonce = args[1] or "lb"
  fire_seconds = tonumber(args[2] or "1e9")
  counter = 0
  statuses = {}
  first_sent = nil
  last_answer = nil
  fire_until = nil
end

function delay()
  if fire_until ~= nil and now() >= fire_until then
    return 3600000 -- draining: send nothing more
  end
  return 0
end

function request()
  local t = now()
  if first_sent == nil then
    first_sent = t
    fire_until = t + fire_seconds
  end
  counter = counter + 1
  local id = tid * 1000000000 + counter
  local body = '{"reason":"' .. nonce .. '-' .. tid .. '-' .. counter .. '"}'
  return wrk.format("POST", "/fire/" .. id, { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
  last_answer = now()
end

function done(summary, latency, requests)
  local counts, sent, t0, t1 = {}, 0, nil, nil
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses") or {}
    for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
    sent = sent + (thread:get("counter") or 0)
    local a, b = thread:get("first_sent"), thread:get("last_answer")
    if a ~= nil and (t0 == nil or a < t0) then t0 = a end
    if b ~= nil and (t1 == nil or b > t1) then t1 = b end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"sent":%d,"duration_us":%d,"window_s":%.6f,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"status_counts":{%s},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, sent, summary.duration, (t0 and t1) and (t1 - t0) or 0, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ","),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
