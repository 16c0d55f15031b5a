-- Test app: HTTP edges.  /status/NNN answers NNN; /header/NAME answers
-- 200 with the response header NAME of the table below; /info tells
-- what the request table holds; /ws echoes.  Env: PORT, CLOSE_TIMEOUT,
-- HANDSHAKE_TIMEOUT.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  close_timeout = tonumber(os.getenv("CLOSE_TIMEOUT")) or 5,
  handshake_timeout = tonumber(os.getenv("HANDSHAKE_TIMEOUT")) or 10,
  -- the lingering close is tested with a body larger than LINGER_MAX
  max_body_size = 1 << 30,
}

local HEADERS = {
  ["transfer-encoding"] = { ["Transfer-Encoding"] = "chunked" },
  ["content-length"] = { ["Content-Length"] = "2" },
  connection = { Connection = "keep-alive" },
  upgrade = { Upgrade = "h2c" },
  vt = { ["X-Vt"] = "a\vb" },
  ff = { ["X-Ff"] = "a\fb" },
  del = { ["X-Del"] = "a\127b" },
  soh = { ["X-Soh"] = "a\1b" },
  nul = { ["X-Nul"] = "a\0b" },
  lf = { ["X-Lf"] = "a\nb" },
  space = { ["X Space"] = "1" },
  colon = { ["X:Colon"] = "1" },
  empty = { [""] = "1" },
  slash = { ["X/Slash"] = "1" },
  cr = { ["X\rCr"] = "1" },
  tab = { ["X-Tab"] = "a\tb" },
  utf8 = { ["X-Utf8"] = "caf\xC3\xA9" },
}

app:use(function(req, next)
  local status = req.path:match("^/status/(%d%d%d)$")
  if status then return tonumber(status), {}, "" end
  local name = req.path:match("^/header/(.*)$")
  if name then return 200, HEADERS[name], "ok" end
  if req.path == "/" or req.path == "/info" then
    return 200, { ["Content-Type"] = "text/plain" },
      ("path=%s query=%s target=%s host=%s\n"):format(req.path,
        tostring(req.query), req.target, tostring(req.headers.host))
  end
  return next()
end)

app:ws("/ws", require "moonsocket.handlers.echo")

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
