-- The benchmark's echo with permessage-deflate (RFC 7692): /ws with
-- context takeover (compression = true: 15-bit windows both ways), and
-- /lean with no context takeover either way, which keeps no zlib state
-- between messages.  A client that does not offer the extension gets
-- plain frames on either route: that is the "off" case.  Quiet, large
-- messages, many connections, no keep-alive pings.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_message_size = 16 * 1024 * 1024,
  max_connections = 20000,
  keep_alive_interval = 0,
}

local echo = require "moonsocket.handlers.echo"
app:ws("/ws", echo, { compression = true })
app:ws("/lean", echo, { compression = {
  server_no_context_takeover = true,
  client_no_context_takeover = true,
} })

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 0,
})
moonsocket.run()
