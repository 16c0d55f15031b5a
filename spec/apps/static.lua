-- Test app: the files of STATIC_DIR, and an echo at /ws.
local moonsocket = require "moonsocket"

local app = moonsocket.app {}
app:ws("/ws", require "moonsocket.handlers.echo")
app:use(moonsocket.static(assert(os.getenv("STATIC_DIR")),
                          { max_age = tonumber(os.getenv("MAX_AGE")) }))
assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
