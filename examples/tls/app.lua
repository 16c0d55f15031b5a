-- The echo sample over TLS: https://localhost:5443 and wss://.../ws, with
-- plain http://localhost:5000 beside it in the same process.  A
-- self-signed certificate is made on the first run (by `openssl req`,
-- into examples/tls/certs/, which git ignores); browsers warn about it.
-- SIGHUP reloads the certificate files without dropping connections.
local moonsocket = require "moonsocket"

local dir = os.getenv("CERT_DIR") or "examples/tls/certs"
local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
if not io.open(cert) then
  assert(os.execute(("mkdir -p %q && openssl req -x509 -newkey rsa:2048 "
    .. "-nodes -days 30 -subj /CN=localhost -addext "
    .. "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %q -out %q "
    .. "2>/dev/null"):format(dir, key, cert)), "openssl req failed")
end

local app = moonsocket.app { max_message_size = 16 * 1024 * 1024 }
app:ws("/ws", require "moonsocket.handlers.echo")
app:use(moonsocket.static(os.getenv("PUBLIC_DIR") or "public"))

local host = os.getenv("HOST") or "127.0.0.1"
assert(app:listen { host = host,
                    port = tonumber(os.getenv("TLS_PORT")) or 5443,
                    tls = { cert = cert, key = key } })
assert(app:listen { host = host, port = tonumber(os.getenv("PORT")) or 5000 })
moonsocket.run()
