-- The app examples/embed/host.c serves on the host's own loop: every
-- WebSocket at /ws hears the host's ticks ("tick 7") and the lines it
-- reads from stdin ("line hello").  The host runs the loop, so this
-- script sets up and returns the hooks the host calls: it does not call
-- moonsocket.run().  Run it with `make examples`, then, from the
-- repository's root, `LUA_PATH='lua/?.lua;lua/?/init.lua;;'
-- build/examples/embed-host`.
local moonsocket = require "moonsocket"

local pairs = pairs
local utf8_len = utf8.len

local app = moonsocket.app { keep_alive_interval = 30 }

-- The open WebSockets.  open and close are always paired, so this set
-- is exactly the sockets a broadcast can reach.
local sockets = {}

app:ws("/ws", {
  open = function(ws) sockets[ws] = true end,
  close = function(ws) sockets[ws] = nil end,
})

local function broadcast(text)
  local kind = utf8_len(text) and "text" or "binary"
  for ws in pairs(sockets) do
    ws:send(text, kind)   -- a slow consumer is closed by the core (1008)
  end
end

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5000,
})

return {
  on_tick = function(n) broadcast("tick " .. n) end,
  on_line = function(line) broadcast("line " .. line) end,
}
