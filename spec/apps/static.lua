-- Test app: the files of STATIC_DIR, and an echo at /ws.  Env: PORT,
-- MAX_AGE, HANDSHAKE_TIMEOUT.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  handshake_timeout = tonumber(os.getenv("HANDSHAKE_TIMEOUT")) or 10,
}
app:ws("/ws", require "moonsocket.handlers.echo")
app:use(moonsocket.static(assert(os.getenv("STATIC_DIR")),
                          { max_age = tonumber(os.getenv("MAX_AGE")) }))
assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
