-- The echo sample: the page at http://localhost:5000 and a WebSocket
-- echo at /ws.  Run it with `make run`, or `moonsocket examples/echo/app.lua`
-- from the repository's root.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  keep_alive_interval = 120,      -- seconds between pings to idle sockets
  max_message_size = 16 * 1024 * 1024,
  compression = true,             -- permessage-deflate, as browsers offer
}

app:ws("/ws", require "moonsocket.handlers.echo")
app:use(moonsocket.static(os.getenv("PUBLIC_DIR") or "public"))

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 5000,
})
moonsocket.run()
