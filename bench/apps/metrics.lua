-- The scrape-cost benchmark's app (bench/scrape_cost.py): the echo at /ws
-- and moonsocket.metrics at /metrics, quiet, room for 20,000
-- connections, no keep-alive pings.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_connections = 20000,
  keep_alive_interval = 0,
}

app:use(moonsocket.metrics { path = "/metrics" })
app:ws("/ws", require "moonsocket.handlers.echo")

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 0,
})
moonsocket.run()
