-- Test app: Redis through moonsocket.socket and lua-redis while a
-- WebSocket echoes.  Env: PORT, REDIS_PORT.  /echo echoes; /load takes
-- "THREADS ROUNDS": THREADS light threads connect, each with a
-- connection and a lua-redis client of its own, and it answers "ready";
-- on "go" each GETs the key "load" ROUNDS times, 20 ms apart (the 200
-- GETs of a round are in flight together), and it answers "done OK"
-- (the GETs that read the value) once all have ended.
package.path = package.path .. ";/usr/share/lua/5.3/?.lua"
local moonsocket = require "moonsocket"
local redis = require "redis"
local socket = require "moonsocket.socket"

local REDIS_PORT = tonumber(os.getenv("REDIS_PORT"))

local function client()
  local s = socket.tcp()
  s:settimeout(5)
  assert(s:connect("127.0.0.1", REDIS_PORT))
  return redis.connect { socket = s }, s
end

local app = moonsocket.app {}
app:ws("/echo", require "moonsocket.handlers.echo")
app:ws("/load", function(ws)
  local setup, sock = client()
  setup:set("load", "value")
  sock:close()
  local message = ws:receive()
  local threads, rounds = message:match("^(%d+) (%d+)$")
  local ok, connected, list = 0, 0, {}
  local go = moonsocket.queue()
  for i = 1, tonumber(threads) do
    list[i] = moonsocket.spawn(function()
      local c, s = client()
      connected = connected + 1
      go:get()
      for _ = 1, tonumber(rounds) do
        if c:get("load") == "value" then ok = ok + 1 end
        moonsocket.sleep(0.02)
      end
      s:close()
    end)
  end
  while connected < #list do moonsocket.sleep(0.01) end
  ws:send("ready")
  assert(ws:receive() == "go")
  for _ = 1, #list do go:put(true) end
  for _, th in ipairs(list) do assert(th:join()) end
  ws:send(("done %d"):format(ok))
  ws:receive()
end)
assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
