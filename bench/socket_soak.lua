-- bench/socket_soak.lua: moonsocket.socket connected and closed over and
-- over, then the process's descriptors and resident memory compared
-- with what they were before.
--
--   moonsocket bench/socket_soak.lua [CYCLES] [MODES]
--
-- CYCLES (100000) per mode; MODES a comma list (close,gc,thread):
--   close   connect, PING, +PONG, close()
--   gc      the same without close(): the socket is dropped while
--           connected, and the collector must close it
--   thread  each cycle a light thread that connects, PINGs and ends
--           with its socket open (the thread joined, then dropped)
-- The listener is redis-server: REDIS_PORT names one; without it the
-- script starts its own on a free port (and stops it).
--
-- Two passes of every mode.  The first brings the process to its steady
-- state: between collections the garbage of the cycles (closed sockets
-- not yet collected, strings) grows Lua's heap to a few MiB, and the
-- allocator keeps those pages once it is collected, so VmRSS rises
-- during the first 100,000 cycles whether or not anything leaks.  The
-- second pass must then leave it where it was.  The checks, as TAP (the
-- exit status is 1 when one fails):
--   - no error in any cycle;
--   - after each mode of each pass and two full collections, exactly
--     the descriptors open at the start (/proc/self/fd);
--   - VmRSS after the second pass within RSS_TOLERANCE_KIB (512) of
--     what it was after the first: a leak of 1 byte per cycle of 100,000
--     cycles in each of three modes would show.
-- It also prints the most descriptors seen open during each mode (every
-- 1,000 cycles): for "gc" and "thread", how far the collector lets
-- dropped sockets pile up, and VmRSS from the start.
local moonsocket = require "moonsocket"
local socket = require "moonsocket.socket"
local luasocket = require "socket"          -- the clock, a free port
local lfs = require "lfs"                   -- Debian's lua-filesystem
local now = luasocket.gettime

local CYCLES = tonumber(arg[1]) or 100000
local MODES = arg[2] or "close,gc,thread"
local RSS_TOLERANCE_KIB = tonumber(os.getenv("RSS_TOLERANCE_KIB")) or 512

local function slurp(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  return text
end

local function rss_kib()
  return tonumber(slurp("/proc/self/status"):match("VmRSS:%s*(%d+) kB"))
end

-- The descriptors open in this process, read in the process (a popen'd
-- `ls` could see the pipe's other end before the parent closes it).
-- The count includes lfs's own descriptor of the directory, and "." and
-- "..": every time alike.
local function fds()
  local n = 0
  for _ in lfs.dir("/proc/self/fd") do n = n + 1 end
  return n
end

local function full_gc()
  collectgarbage()
  collectgarbage()
end

------------------------------------------------------------------------
-- The listener
------------------------------------------------------------------------

local redis_port = tonumber(os.getenv("REDIS_PORT"))
local redis_pidfile

local function start_redis()
  local probe = luasocket.bind("127.0.0.1", 0)
  local _, port = probe:getsockname()
  probe:close()
  redis_pidfile = os.tmpname()
  assert(os.execute(("redis-server --port %d --bind 127.0.0.1 --save '' "
    .. "--appendonly no --maxclients 20000 --daemonize yes "
    .. "--loglevel warning --pidfile %s"):format(port, redis_pidfile)),
    "cannot start redis-server (apt-get install redis-server)")
  return tonumber(port)
end

local function stop_redis()
  if not redis_pidfile then return end
  local f = io.open(redis_pidfile)
  local pid = f and f:read("n")
  if f then f:close() end
  if pid then os.execute("kill " .. pid) end
  os.remove(redis_pidfile)
end

------------------------------------------------------------------------
-- The cycles
------------------------------------------------------------------------

local errors, first_error = 0, nil

local function failed(what, err)
  errors = errors + 1
  first_error = first_error or (what .. ": " .. tostring(err))
end

-- Connects and PINGs; returns the socket, still open, or nil.
local function ping()
  local s = socket.tcp()
  s:settimeout(5)
  local ok, err = s:connect("127.0.0.1", redis_port)
  if not ok then return failed("connect", err) end
  ok, err = s:send("PING\r\n")
  if not ok then s:close() return failed("send", err) end
  local line
  line, err = s:receive("*l")
  if line ~= "+PONG" then s:close() return failed("receive", line or err) end
  return s
end

local CYCLE = {
  close = function()
    local s = ping()
    if s then s:close() end
  end,
  gc = function()
    ping()                                 -- dropped, open
  end,
  thread = function()
    local th = moonsocket.spawn(function()
      ping()                               -- ends with its socket open
    end)
    local ok, err = th:join()
    if not ok then failed("thread", err) end
  end,
}

local tap = 0
local failures = 0

local function check(ok, text)
  tap = tap + 1
  if not ok then failures = failures + 1 end
  print(("%s %d - %s"):format(ok and "ok" or "not ok", tap, text))
end

-- CYCLES of one mode: the most descriptors seen, the seconds taken.  A
-- function of its own, so that no register of the caller's frame still
-- holds the last socket when it collects (Lua marks a frame's dead
-- registers too).
local function cycles(cycle)
  local peak = 0
  local t0 = now()
  for i = 1, CYCLES do
    cycle()
    if i % 1000 == 0 then peak = math.max(peak, fds()) end
  end
  return peak, now() - t0
end

-- One pass: CYCLES of each mode, each followed by two full collections
-- and the descriptor check.
local function pass(n, modes, base_fds)
  for _, mode in ipairs(modes) do
    local peak, seconds = cycles(CYCLE[mode])
    peak = math.max(peak, base_fds)
    local before_gc = fds()
    moonsocket.sleep(0.01)      -- the last threads' coroutines pooled
    full_gc()
    local after = fds()
    print(("# pass %d, %s: %d cycles in %.1f s (%.0f/s); descriptors: at "
      .. "most %+d during, %+d at the end, %+d after collection; VmRSS "
      .. "%d KiB"):format(n, mode, CYCLES, seconds, CYCLES / seconds,
      peak - base_fds, before_gc - base_fds, after - base_fds, rss_kib()))
    check(after == base_fds, ("pass %d, %s: descriptors back to the "
      .. "baseline (%d, baseline %d)"):format(n, mode, after, base_fds))
  end
end

local function soak()
  local modes = {}
  for mode in MODES:gmatch("[^,]+") do
    assert(CYCLE[mode], "unknown mode " .. mode)
    modes[#modes + 1] = mode
  end
  full_gc()
  local base_fds, start_rss = fds(), rss_kib()
  print(("# start: %d descriptors, VmRSS %d KiB"):format(base_fds,
                                                          start_rss))
  pass(1, modes, base_fds)
  local base_rss = rss_kib()
  pass(2, modes, base_fds)
  local rss = rss_kib()
  check(errors == 0, ("no errors in %d cycles (%d%s)"):format(
    2 * CYCLES * #modes, errors, first_error
      and ("; first: " .. first_error) or ""))
  check(rss - base_rss <= RSS_TOLERANCE_KIB, ("VmRSS %d KiB after pass 2, "
    .. "%+d KiB from pass 1's %d KiB (tolerance %d KiB; %+d KiB from the "
    .. "start)"):format(rss, rss - base_rss, base_rss, RSS_TOLERANCE_KIB,
    rss - start_rss))
end

if not redis_port then redis_port = start_redis() end
local deadline = now() + 10
moonsocket.spawn(function()
  -- the listener may still be starting
  local s = socket.tcp()
  while not s:connect("127.0.0.1", redis_port) do
    if now() > deadline then
      check(false, "redis-server on port " .. redis_port .. " answers")
      return
    end
    moonsocket.sleep(0.05)
  end
  s:close()
  local ok, err = xpcall(soak, debug.traceback)
  if not ok then check(false, "the soak ran: " .. err) end
end)
local ran, err = pcall(moonsocket.run)
stop_redis()                 -- whatever happened: no Redis left behind
if not ran then error(err, 0) end
print("1.." .. tap)
os.exit(failures == 0 and 0 or 1)
