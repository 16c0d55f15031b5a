-- The benchmark's echo over TLS and over plain TCP from one process:
-- wss at TLS_PORT and ws at PORT, the same /ws route, so that the two
-- differ by TLS alone.  Quiet, large messages, many connections, no
-- keep-alive pings.  A self-signed ECDSA P-256 certificate is made on
-- the first run (and again when the old one has expired) in CERT_DIR,
-- by default bench/certs/, which git ignores.
local moonsocket = require "moonsocket"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local dir = os.getenv("CERT_DIR") or (here .. "/../certs")
local cert, key = dir .. "/cert.pem", dir .. "/key.pem"

local function make_certificate()
  assert(os.execute(("mkdir -p %q && openssl req -x509 -newkey ec "
    .. "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
    .. "-subj /CN=localhost -keyout %q -out %q 2>/dev/null")
    :format(dir, key, cert)), "openssl req failed")
end

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_message_size = 16 * 1024 * 1024,
  max_connections = 20000,
  keep_alive_interval = 0,
}

app:ws("/ws", require "moonsocket.handlers.echo")

local host = os.getenv("HOST") or "127.0.0.1"
local tls = { host = host, port = tonumber(os.getenv("TLS_PORT")) or 0,
              tls = { cert = cert, key = key } }
local f = io.open(cert)
if f then f:close() else make_certificate() end
local ok, err, code = app:listen(tls)
if not ok and code == "ETLS" then     -- expired, say: make a new one
  make_certificate()
  ok, err = app:listen(tls)
end
assert(ok, err)
assert(app:listen { host = host, port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
