-- The benchmark's echo at /ws, callback form: quiet, large messages,
-- many connections, no keep-alive pings.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_message_size = 16 * 1024 * 1024,
  max_connections = 20000,
  keep_alive_interval = 0,
  -- bench/rbuf_sweep.py sets it; unset, the default
  receive_buffer_size = tonumber(os.getenv("RECEIVE_BUFFER_SIZE") or ""),
}

app:ws("/ws", require "moonsocket.handlers.echo")

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 0,
})
moonsocket.run()
