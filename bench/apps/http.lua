-- The callgrind guard's HTTP app: a middleware answering /hello, and
-- /echo with the length of the body it read, in front of a WebSocket
-- route at /ws (callback echo); quiet.
-- HTTP2=on: HTTP/2 with prior knowledge beside HTTP/1.1.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "error",
  keep_alive_interval = 0,
}

local HEADERS = { ["Content-Type"] = "text/plain" }

app:use(function(req, next)
  if req.path == "/hello" then return 200, HEADERS, "hello\n" end
  if req.path == "/echo" then return 200, HEADERS, #req:body() .. "\n" end
  return next()
end)

app:ws("/ws", require "moonsocket.handlers.echo")

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 0,
  http2 = os.getenv("HTTP2") == "on",     -- h2c with prior knowledge
})
moonsocket.run()
