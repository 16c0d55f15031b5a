-- bench/recovery.lua: many clients lose their connection at once, miss
-- messages, and all come back at once to recover them (ws:subscribe
-- with since): how long until every one has every missed message, and
-- what that costs the server.
--
--   CLIENTS=N MISSED=N moonsocket bench/recovery.lua    (make recovery)
--   MODE=during ...                                     (the same target)
--
-- MODE=after (the default) publishes the missed messages while the
-- clients are away and none while they come back; MODE=during keeps
-- publishing throughout (below).
--
-- CLIENTS (10000) connect to bench/apps/recovery.lua, run as a separate
-- process pinned to CPU 0 (this one to CPU 1, when taskset is there),
-- 256 handshakes at a time, and are subscribed to a topic that keeps
-- 100 messages.  Then they all drop (ws:abort: no close frame, the
-- server sees lost connections), MISSED (100) messages of 64 bytes are
-- published, and all reconnect at once, each with the position it last
-- saw.  Timed from the first connect call until the last client has
-- its MISSED messages, each at the next offset, then its welcome with
-- recovered = true; the server's CPU time over that span is read from
-- /proc.  Any client that gets anything else fails the run (exit 1).
--
-- MODE=during runs bench/loadgen recover (C clients, `make loadgen`)
-- against the same app instead, with a room that keeps HISTORY (1000)
-- messages: CLIENTS subscribe, a publisher sends RATE (5) messages of
-- 64 B a second and goes on steadily throughout; once every client has
-- had 5 s of live messages, all drop at once, MISSED messages are
-- published at once, and all come back with their positions while the
-- publisher goes on, so each misses MISSED and what was published until
-- its subscribe; then RATE more.  (The publisher also waits rather than
-- be more than MISSED ahead of a live client or HISTORY ahead of one
-- coming back.)  Every client must have every offset once, in order,
-- and recovered = true.  They come back 256 upgrades at a time (loadgen
-- -j: 10,000 connects at once would overflow the kernel's listen queue,
-- somaxconn, and a dropped SYN is sent again only a second later).
-- Timed from the drop until the last welcome; the server's CPU over
-- that span.
--
-- REDIS=1 (either mode): the app keeps the history in a redis-server of
-- this script's own (app:use_backplane; no persistence, on the clients'
-- CPU); Redis's CPU over the same span is printed too.
-- env SERVER (build/moonsocket), HISTORY (100; during: 1000), RATE (5),
-- REDIS, PIN=0: no taskset.
local moonsocket = require "moonsocket"
local luasocket = require "socket"          -- the clock
local now = luasocket.gettime
local match, sub = string.match, string.sub

local CLIENTS = tonumber(os.getenv("CLIENTS")) or 10000
local MISSED = tonumber(os.getenv("MISSED")) or 100
local RAMP = 256                            -- handshakes under way at once
local SERVER = os.getenv("SERVER") or "build/moonsocket"
local MODE = os.getenv("MODE") or "after"
assert(MODE == "after" or MODE == "during", "MODE is after or during")
local HISTORY = tonumber(os.getenv("HISTORY"))
  or (MODE == "after" and 100 or 1000)
local RATE = tonumber(os.getenv("RATE")) or 5

local function slurp(path)
  local f = io.open(path)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return text
end

local function have(command)
  return os.execute("command -v " .. command .. " >/dev/null 2>&1")
end

-- The server's user and system CPU, seconds (/proc/PID/stat fields 14,
-- 15 in clock ticks of 1/100 s).
local function cpu_of(pid)
  local stat = slurp("/proc/" .. pid .. "/stat")
  local rest = stat:match("%) (.*)$")            -- after "(comm)"
  local fields = {}
  for field in rest:gmatch("%S+") do fields[#fields + 1] = field end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

-- TcpExt ListenOverflows: connections the kernel dropped because a
-- listen queue was full (the client's SYN is sent again 1 s later, then
-- 3 s, ...), system-wide.
local function listen_overflows()
  local text = slurp("/proc/net/netstat") or ""
  local names, values = text:match("TcpExt: ([^\n]*)\nTcpExt: ([^\n]*)")
  if not names then return 0 end
  local i, index = 0, nil
  for name in names:gmatch("%S+") do
    i = i + 1
    if name == "ListenOverflows" then index = i end
  end
  i = 0
  for value in values:gmatch("%S+") do
    i = i + 1
    if i == index then return tonumber(value) end
  end
  return 0
end

-- ------------------------------------------------------ the server

local pin = os.getenv("PIN") ~= "0" and have("taskset")
local REDIS = os.getenv("REDIS") == "1"
assert(not REDIS or have("redis-server"), "REDIS=1 needs redis-server")
local log = os.tmpname()
local self_pid = slurp("/proc/self/stat"):match("^(%d+)")
if pin then os.execute("taskset -cp 1 " .. self_pid .. " >/dev/null") end

-- REDIS=1: a redis-server of its own (no persistence) on a free port,
-- on the clients' CPU (it inherits this process's), keeps the history.
local redis_pid, redis_url
if REDIS then
  local probe = assert(luasocket.bind("127.0.0.1", 0))
  local _, redis_port = probe:getsockname()
  probe:close()
  local spawn = io.popen(("redis-server --port %d --bind 127.0.0.1 "
    .. "--save '' --appendonly no >/dev/null 2>&1 & echo $!")
    :format(redis_port))
  redis_pid = spawn:read("l")
  spawn:close()
  for _ = 1, 500 do
    local probe_conn = luasocket.connect("127.0.0.1", redis_port)
    if probe_conn then
      probe_conn:close()
      break
    end
    luasocket.sleep(0.01)
  end
  redis_url = "redis://127.0.0.1:" .. redis_port
end

local spawn = io.popen(("HISTORY=%d PORT=0 REDIS_URL=%s "
  .. "LUA_PATH='lua/?.lua;lua/?/init.lua;;' %s%s bench/apps/recovery.lua "
  .. "2>%s & echo $!")
  :format(HISTORY, redis_url or "", pin and "taskset -c 0 " or "", SERVER,
  log))
local server_pid = spawn:read("l")
spawn:close()

-- listening, and with Redis, connected to it
local port
for _ = 1, 500 do
  local text = slurp(log) or ""
  port = text:match("listening on [%d.]+:(%d+)")
  if port and (not REDIS or text:find("redis connected", 1, true)) then
    break
  end
  port = nil
  luasocket.sleep(0.01)
end
assert(port, "the server did not start: " .. (slurp(log) or ""))
local base = "ws://127.0.0.1:" .. port

local function finish(status)
  os.execute("kill " .. server_pid)
  if redis_pid then os.execute("kill " .. redis_pid) end
  os.remove(log)
  os.exit(status)
end

-- ------------------------------------------------------ while publishing

-- loadgen recover against the server (at /co, where a publish with
-- Redis waits for its position): its figures, printed as one line.
local function during()
  local live = math.max(1, math.ceil(5 * RATE))  -- 5 s of messages
  local command = ("bench/loadgen -P %s -p %s -u /co -c %d -d %d "
    .. "--lead %d --rate %g --burst %d -n %d -t %d recover 2>&1")
    :format(port, server_pid .. (redis_pid and "," .. redis_pid or ""),
    CLIENTS, live, HISTORY, RATE, MISSED, math.max(1, RATE // 1), 300)
  local overflows0 = listen_overflows()
  local pipe = io.popen(command)
  local out = pipe:read("a")
  local ok = pipe:close()
  local overflows = listen_overflows() - overflows0
  local kv = {}
  for k, v in (out:match("test=[^\n]*") or ""):gmatch("(%S+)=(%S+)") do
    kv[k] = tonumber(v) or v
  end
  if not ok or kv.ok ~= CLIENTS then
    print(out)
    finish(1)
  end
  local cpu, redis_cpu = tostring(kv.pid_cpu_s):match("^([%d.-]+),?(.*)$")
  cpu = tonumber(cpu)
  print(("recovery while publishing %g messages of 64 B a second: %d "
    .. "clients, each missed %.1f (at most %d), %d published from the "
    .. "drop until all were back (%d subscribes answered while "
    .. "publishes were under way): all recovered in %.2f s (first %.3f "
    .. "s, half %.3f s, 99 %% %.3f s); server CPU %.2f s (%.0f %% of one "
    .. "core)%s%s; the clients' CPU %.0f %% of one core; %d deliveries, "
    .. "every one checked; SYNs dropped on a full listen queue %d")
    :format(RATE, CLIENTS, kv.missed_mean, kv.missed_max,
    kv.publishes_during, kv.amid, kv.seconds, kv.first_ms / 1000,
    kv.half_ms / 1000, kv.p99_ms / 1000, cpu, 100 * cpu / kv.seconds,
    redis_pid and (", Redis CPU %s s"):format(redis_cpu) or "",
    pin and ", server on CPU 0, clients on CPU 1" or "", kv.client_cpu,
    kv.deliveries, overflows))
  finish(0)
end

if MODE == "during" then during() end

-- ------------------------------------------------------ the clients

local clients = {}           -- [i] = { ws, position, got, state }
local connected, recovered = 0, 0
local finished = {}          -- when each client had recovered, in order
local failures = {}
local opened = moonsocket.queue()     -- a client became ready

local function fail(c, why)
  if #failures < 10 then failures[#failures + 1] = why end
  c.state = "failed"
  opened:put(c)
end

-- A client's handler: the welcome gives its position; coming back, the
-- missed messages come first, each at the next offset.
local function handler(c)
  return {
    message = function(_, data)
      local recov, position = data:match("^welcome (%a+) (%x+:%d+)$")
      if position then
        if c.since then
          if recov ~= "true" or c.got ~= MISSED then
            return fail(c, ("recovered %s with %d of %d messages")
              :format(recov, c.got, MISSED))
          end
          recovered = recovered + 1
          finished[recovered] = now()
        else
          connected = connected + 1
        end
        c.position, c.state = position, "ready"
        c.epoch, c.last = position:match("^(%x+):(%d+)$")
        c.last = tonumber(c.last)
        return opened:put(c)
      end
      local epoch, offset = match(data, "^(%x+):(%d+) ")
      if epoch ~= c.epoch or tonumber(offset) ~= c.last + c.got + 1 then
        return fail(c, "out of order: " .. sub(data, 1, 40))
      end
      c.got = c.got + 1
    end,
    close = function(_, code, reason)
      if c.state ~= "dropped" and c.state ~= "failed" then
        fail(c, ("closed %s %s"):format(code, reason))
      end
    end,
  }
end

local function open(c, query)
  c.got, c.state = 0, "connecting"
  c.ws = moonsocket.connect(base .. "/r" .. (query or ""), {
    handler = handler(c), keep_alive_interval = 0,
    handshake_timeout = 60,
  })
end

local t_called              -- when the last connect call returned

local ctl_replies = moonsocket.queue()
local ctl = moonsocket.connect(base .. "/ctl", {
  keep_alive_interval = 0,
  handler = {
    open = function() ctl_replies:put("open") end,
    message = function(_, data) ctl_replies:put(data) end,
    close = function(_, code, reason)
      ctl_replies:put(("closed %s %s"):format(code, reason))
    end,
  },
})
local function ask(command)
  assert(ctl:send(command))
  return ctl_replies:get(30)
end

local function run()
  local opened_ctl = ctl_replies:get(10)
  assert(opened_ctl == "open", "control socket: " .. tostring(opened_ctl))
  -- a first message gives the topic its epoch: a position taken from a
  -- topic with no message yet ("0000000000000000:0") names no history
  ask("pub 1")
  -- all connect, RAMP handshakes at a time
  local started = 0
  while started < CLIENTS or connected < CLIENTS do
    while started < CLIENTS and started - connected < RAMP do
      started = started + 1
      clients[started] = {}
      open(clients[started])
    end
    local c = opened:get(60)
    if not c or c.state == "failed" then break end
  end
  if connected < CLIENTS then
    print("connect failed: " .. table.concat(failures, "; "))
    finish(1)
  end
  -- all drop, without a close frame; the server sees them go
  for _, c in ipairs(clients) do
    c.state = "dropped"
    c.ws:abort()
  end
  local t_drop = now()
  while ask("count") ~= "count 0" do moonsocket.sleep(0.01) end
  local dropped_in = now() - t_drop
  local last = ask("pub " .. MISSED)
  -- all come back at once, each with the position it last saw
  local overflows0 = listen_overflows()
  local cpu0, self0, t0 = cpu_of(server_pid), cpu_of(self_pid), now()
  local redis0 = redis_pid and cpu_of(redis_pid)
  for _, c in ipairs(clients) do
    c.since = c.position
    open(c, "?" .. c.position)
  end
  t_called = now()
  while recovered < CLIENTS and #failures == 0 do
    if not opened:get(120) then break end
  end
  local elapsed, cpu = now() - t0, cpu_of(server_pid) - cpu0
  local redis_cpu = redis_pid and cpu_of(redis_pid) - redis0
  local t_calls, self_cpu = t_called - t0, cpu_of(self_pid) - self0
  local overflows = listen_overflows() - overflows0
  if recovered < CLIENTS then
    print(("%d of %d recovered: %s"):format(recovered, CLIENTS,
      table.concat(failures, "; ")))
    finish(1)
  end
  assert(last:match("^pub %x+:%d+$"), last)
  local function at(share)
    return finished[math.max(1, math.ceil(share * CLIENTS))] - t0
  end
  print(("connect calls %.3f s; recovered: first %.3f s, half %.3f s, "
    .. "99 %% %.3f s, all %.3f s; the clients' CPU %.2f s; SYNs dropped "
    .. "on a full listen queue %d"):format(t_calls, at(0), at(0.5),
    at(0.99), at(1), self_cpu, overflows))
  print(("recovery: %d clients, %d missed messages of 64 B each: all "
    .. "recovered in %.2f s (%.0f clients/s, %.0f messages/s); server "
    .. "CPU %.2f s (%.0f %% of one core)%s%s; the server saw all %d "
    .. "drops within %.2f s"):format(CLIENTS, MISSED, elapsed,
    CLIENTS / elapsed, CLIENTS * MISSED / elapsed, cpu,
    100 * cpu / elapsed,
    redis_pid and (", Redis CPU %.2f s"):format(redis_cpu) or "",
    pin and ", server on CPU 0, clients on CPU 1" or "", CLIENTS,
    dropped_in))
  finish(0)
end

moonsocket.spawn(function()
  local ok, err = xpcall(run, debug.traceback)
  if not ok then
    print(err)
    finish(1)
  end
end)
moonsocket.run()
