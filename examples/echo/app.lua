-- The echo sample: a WebSocket echo endpoint at /ws.
-- Run it with `make run`, or `moonsocket examples/echo/app.lua`.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  keep_alive_interval = 120,      -- seconds between pings to idle sockets
  max_message_size = 16 * 1024 * 1024,
}

app:ws("/ws", require "moonsocket.handlers.echo")

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5000,
})
moonsocket.run()
