-- bench/timers.lua: what timers cost.  `moonsocket bench/timers.lua rss
-- N` arms N timers and prints the resident memory they add, per timer;
-- `... fire N` fires a timer N times (a period of 1 us: once per loop
-- iteration) and exits, for callgrind (make -C bench timers).
local moonsocket = require "moonsocket"

local mode, n = arg[1] or "rss", tonumber(arg[2]) or 100000

local function rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local kib = f:read("a"):match("VmRSS:%s*(%d+) kB")
  f:close()
  return tonumber(kib)
end

local function noop() end

if mode == "rss" then
  collectgarbage()
  collectgarbage()
  local before = rss_kib()
  local timers = {}
  for i = 1, n do timers[i] = moonsocket.after(3600, noop) end
  collectgarbage()
  collectgarbage()
  local with_list = rss_kib()
  timers = nil
  collectgarbage()
  collectgarbage()
  local armed = rss_kib()
  io.write(string.format("%d timers armed: %.0f bytes each "
    .. "(%.0f with the app's list of them)\n", n,
    (armed - before) * 1024 / n, (with_list - before) * 1024 / n))
  os.exit(0)           -- the armed timers would keep the loop going
elseif mode == "fire" then
  local fired = 0
  local t
  t = moonsocket.every(1e-6, function()
    fired = fired + 1
    if fired == n then
      t:cancel()
      moonsocket.shutdown()
    end
  end)
  moonsocket.run()
  io.write(fired, " fires\n")
else
  error("usage: timers.lua rss|fire N")
end
