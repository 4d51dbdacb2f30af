-- post.lua: wrk script for blackhole (see harness/drivers/lua/langbench_wrk.lua).
-- Kept to compare with httpload (the workloads' driver). Request n of thread t
-- is POST /bh/<t>/<n> with X-Request-ID <nonce>-<t>-<n>
-- and a 2,048-byte body: the id, a colon, and a slice of a 4 MiB pool of
-- xorshift32 output at an offset derived from t and n. blackhole.py
-- (body_for) regenerates the same bytes to check every recorded body.
local ffi = require("ffi")
local bit = require("bit")

local POOL_BYTES = 4 * 1024 * 1024
local BODY = 2048

local function make_pool()
  local words = POOL_BYTES / 4
  local buf = ffi.new("uint32_t[?]", words)
  local x = 2463534242
  for i = 0, words - 1 do
    x = bit.bxor(x, bit.lshift(x, 13))
    x = bit.bxor(x, bit.rshift(x, 17))
    x = bit.bxor(x, bit.lshift(x, 5))
    buf[i] = x % 4294967296 -- bit ops give signed 32-bit numbers
  end
  return ffi.string(buf, POOL_BYTES) -- little-endian words, as blackhole.py's array("I")
end

local pool = make_pool()
local host

require("langbench_wrk").install(function(tid, n, nonce)
  if host == nil then
    host = wrk.headers["Host"] or (wrk.host .. ":" .. wrk.port)
  end
  local id = nonce .. "-" .. tid .. "-" .. n
  local off = (n * 4099 + tid * 65537) % (POOL_BYTES - BODY)
  local head = id .. ":"
  return "POST /bh/" .. tid .. "/" .. n .. " HTTP/1.1\r\nHost: " .. host .. "\r\nX-Request-ID: " .. id ..
         "\r\nContent-Length: 2048\r\n\r\n" .. head .. pool:sub(off + 1, off + BODY - #head)
end)
