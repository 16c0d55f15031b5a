-- Test app: echo at /ws and the sample page over TLS, then a plain
-- listener.  Env: PORT (the TLS port), CERT, KEY, SNI_NAME, SNI_CERT,
-- SNI_KEY, MIN_VERSION.
local moonsocket = require "moonsocket"

local app = moonsocket.app { max_message_size = 16 * 1024 * 1024 + 1024,
                             max_connections = 2000 }
app:ws("/ws", require "moonsocket.handlers.echo")
app:use(moonsocket.static("public"))

local tls = { cert = os.getenv("CERT"), key = os.getenv("KEY"),
              min_version = os.getenv("MIN_VERSION") }
if os.getenv("SNI_NAME") then
  tls.sni = { [os.getenv("SNI_NAME")] = { cert = os.getenv("SNI_CERT"),
                                          key = os.getenv("SNI_KEY") } }
end
local server, err = app:listen { port = tonumber(os.getenv("PORT")) or 0,
                                 tls = tls }
if not server then
  io.stderr:write("tls app: ", err, "\n")
  os.exit(1)
end
assert(app:listen { port = 0 })
moonsocket.run()
