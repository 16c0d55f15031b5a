-- The bridge sample: each WebSocket message asks another service, Redis
-- or HTTP, and the answer goes back, while the loop serves every other
-- client.  Run it with `make bridge` (port 5005; Redis on 127.0.0.1:6379,
-- or REDIS_HOST / REDIS_PORT), or `moonsocket examples/bridge/app.lua`
-- from the repository's root.
--
-- A message is "ID COMMAND ARGS"; the answer is "ID RESULT", in the
-- order the answers come (a slow command does not hold up the next):
--   1 get KEY          the value (Redis GET), or "(nil)"
--   2 set KEY VALUE    "OK" (Redis SET)
--   3 incr KEY         the new value (Redis INCR)
--   4 slow SECONDS     what this server's own slow upstream said, fetched
--                      with moonsocket.http ("slept SECONDS"); at most 10
--   5 echo TEXT        TEXT, at once
-- A failure answers "ID error: WHY"; a message that is no command,
-- "? error: ...".
--
-- Redis is spoken by Debian's lua-redis (redis-lua 2.0.5, written for
-- LuaSocket) over moonsocket.socket; each command takes a connection
-- from the sockets' keep-alive pool and gives it back.
package.path = package.path .. ";/usr/share/lua/5.3/?.lua" -- lua-redis

local moonsocket = require "moonsocket"
local http = require "moonsocket.http"
local redis = require "redis"

local match = string.match
local tonumber = tonumber

local REDIS_HOST = os.getenv("REDIS_HOST") or "127.0.0.1"
local REDIS_PORT = tonumber(os.getenv("REDIS_PORT")) or 6379
local TIMEOUT = 5          -- seconds for each Redis or HTTP exchange
local MAX_SLOW = 10

local app = moonsocket.app {}
local self_url             -- this server's own URL, once it listens

-- One Redis command on a pooled connection: its result, or nil, why.
local function with_redis(command, ...)
  local sock = moonsocket.socket.tcp()
  sock:settimeout(TIMEOUT)
  local ok, err = sock:connect(REDIS_HOST, REDIS_PORT)
  if not ok then return nil, "redis: " .. err end
  local client = redis.connect { socket = sock }
  local done, result = pcall(client[command], client, ...)
  if not done then
    sock:close()
    return nil, "redis: " .. tostring(result)
  end
  sock:setkeepalive(60, 64)
  return result
end

local commands = {}

function commands.get(key)
  local value, err = with_redis("get", key)
  if err then return nil, err end
  return value or "(nil)"
end

function commands.set(key, value)
  if not value then return nil, "set KEY VALUE" end
  local ok, err = with_redis("set", key, value)
  if not ok then return nil, err end
  return "OK"
end

function commands.incr(key)
  local n, err = with_redis("incr", key)
  if not n then return nil, err end
  return tostring(n)
end

function commands.slow(seconds)
  local s = tonumber(seconds)
  if not s or s < 0 or s > MAX_SLOW then
    return nil, "slow SECONDS, 0 to " .. MAX_SLOW
  end
  local status, _, body = http.request(self_url .. "/upstream/slow?s=" .. s,
                                       { timeout = MAX_SLOW + TIMEOUT })
  if not status then return nil, "http: " .. tostring(_) end
  return (body:gsub("\n$", ""))
end

function commands.echo(text)
  return text or ""
end

-- One message, in a thread of its own: the answer, or why not.
local function serve(ws, message)
  local id, name, rest = match(message, "^(%S+) (%a+) ?(.*)$")
  local command = name and commands[name]
  if not command then
    ws:send((id or "?") .. " error: unknown command")
    return
  end
  local a, b = match(rest, "^(%S*) ?(.*)$")
  local result, err = command(a ~= "" and a or nil, b ~= "" and b or nil)
  if name == "echo" then result = rest end
  ws:send(id .. " " .. (result or ("error: " .. err)))
end

app:ws("/bridge", {
  message = function(ws, message)
    moonsocket.spawn(serve, ws, message)
  end,
}, { max_message_size = 4096 })

-- The slow upstream the bridge calls: this very server, on the same
-- loop, which answers after the wait while it serves everyone else.
app:use(function(req, next)
  if req.path ~= "/upstream/slow" then return next() end
  local s = tonumber(req.args.s) or 0
  moonsocket.sleep(s)
  return 200, { ["Content-Type"] = "text/plain" }, "slept " .. s .. "\n"
end)

local server = assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5005,
})
self_url = ("http://127.0.0.1:%d"):format(select(2, server:address()))
moonsocket.run()
