-- The Redis benchmark's app at /ws (run_redis.py): each message is a
-- key, answered with its value from one Redis GET through Debian's
-- lua-redis over moonsocket.socket.  A receive loop per WebSocket, as
-- nginx's peers/nginx_redis.conf has it.  Env: PORT, REDIS_PORT, and
-- PATTERN: "pool" (the default) takes a connection from the keep-alive
-- pool for each message and gives it back; "conn" keeps one Redis
-- connection (and one lua-redis client) per WebSocket.
package.path = package.path .. ";/usr/share/lua/5.3/?.lua" -- lua-redis
local moonsocket = require "moonsocket"
local redis = require "redis"
local socket = require "moonsocket.socket"

local REDIS_PORT = assert(tonumber(os.getenv("REDIS_PORT")), "REDIS_PORT")
local PATTERN = os.getenv("PATTERN") or "pool"
local POOL_SIZE = 256        -- above the benchmark's 100 WebSockets

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_connections = 20000,
  keep_alive_interval = 0,
}

local function connect()
  local sock = socket.tcp()
  sock:settimeout(5)
  local ok, err = sock:connect("127.0.0.1", REDIS_PORT)
  if not ok then return nil, "redis: " .. err end
  return redis.connect { socket = sock }, sock
end

local function pooled(ws)
  while true do
    local key = ws:receive()
    if not key then return end
    local client, sock = assert(connect())
    local value = client:get(key)
    sock:setkeepalive(60, POOL_SIZE)
    ws:send(value or "")
  end
end

local function per_websocket(ws)
  local client, sock = assert(connect())
  while true do
    local key = ws:receive()
    if not key then break end
    ws:send(client:get(key) or "")
  end
  sock:close()
end

app:ws("/ws", PATTERN == "conn" and per_websocket or pooled)

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 0,
})
moonsocket.run()
