-- The HTTP/2 static-file benchmark's app (h2_static.py): the files of
-- STATIC_DIR over TLS at PORT (HTTP/2 by ALPN) with CERT and KEY; quiet.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "error",
  max_connections = 20000,
  keep_alive_interval = 0,
}
app:use(moonsocket.static(assert(os.getenv("STATIC_DIR"), "STATIC_DIR")))

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 0,
  tls = { cert = assert(os.getenv("CERT"), "CERT"),
          key = assert(os.getenv("KEY"), "KEY") },
})
moonsocket.run()
