-- The recovery benchmark's app (bench/recovery.lua), one process:
--   /r           subscribes to "room", which keeps its last HISTORY
--                messages (100); sends "welcome <recovered> <position>"
--   /r?POSITION  the same with since = POSITION ("epoch:offset"): the
--                messages after it come first, each as "<epoch>:<offset>
--                <payload>", then the welcome
--   /ctl         text commands, each answered:
--                  "pub N"   N messages of 64 bytes to "room": "pub POS",
--                            the room's position after them
--                  "count"   "count N", the sockets subscribed to "room"
-- Quiet (log_level "error"), 20,000 connections, no keep-alive pings.
-- env HOST, PORT (0: any), HISTORY.
local moonsocket = require "moonsocket"

local getenv, tonumber = os.getenv, tonumber

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_connections = 20000,
  keep_alive_interval = 0,
}
app:history("room", { size = tonumber(getenv("HISTORY")) or 100 })

local PAYLOAD = ("x"):rep(64)

local function text(position)
  return position.epoch .. ":" .. position.offset
end

app:ws("/r", {
  open = function(ws)
    local ok, info = ws:subscribe("room", { since = ws.request.query })
    if ok then
      ws:send(("welcome %s %s"):format(info.recovered, text(info.position)))
    end
  end,
})

app:ws("/ctl", {
  message = function(ws, msg)
    local n = tonumber(msg:match("^pub (%d+)$"))
    if n then
      for _ = 1, n do app:publish("room", PAYLOAD) end
      local _, position = app:history_read("room", { limit = 1 })
      ws:send("pub " .. text(position))
    elseif msg == "count" then
      ws:send("count " .. app:subscribers("room"))
    else
      ws:close(1008, "expected pub N or count")
    end
  end,
})

assert(app:listen {
  host = getenv("HOST") or "127.0.0.1",
  port = tonumber(getenv("PORT")) or 0,
  backlog = 16384,
})
moonsocket.run()
