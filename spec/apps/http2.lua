-- Test app for spec/http2_spec.lua: a few HTTP routes and the files of
-- STATIC_DIR, on a plain port (HTTP2: "on", "off" or unset) and, with
-- CERT and KEY, a TLS port.  Prints both ports.  Env: PORT, CERT, KEY,
-- HTTP2, MAX_CONCURRENT_STREAMS, MAX_HEADERS, MAX_HEADER_SIZE,
-- MAX_BODY_SIZE (4096 unless set), MAX_INCOMPLETE_BYTES, BODY_TIMEOUT,
-- SEND_WINDOW_TIMEOUT, HANDSHAKE_TIMEOUT.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  max_concurrent_streams = tonumber(os.getenv("MAX_CONCURRENT_STREAMS")),
  max_headers = tonumber(os.getenv("MAX_HEADERS")),
  max_header_size = tonumber(os.getenv("MAX_HEADER_SIZE")),
  max_body_size = tonumber(os.getenv("MAX_BODY_SIZE")) or 4096,
  max_incomplete_bytes = tonumber(os.getenv("MAX_INCOMPLETE_BYTES")),
  body_timeout = tonumber(os.getenv("BODY_TIMEOUT")),
  send_window_timeout = tonumber(os.getenv("SEND_WINDOW_TIMEOUT")),
  handshake_timeout = tonumber(os.getenv("HANDSHAKE_TIMEOUT")),
}
-- /slow reads 1 KiB of its body, waits for /go, then reads the rest
local gate = moonsocket.queue()
-- a middleware: a field on every answer
app:use(function(req, nxt)
  local status, headers, body = nxt()
  if type(status) == "number" then
    headers = headers or {}
    headers["X-Middleware"] = "yes"
  end
  return status, headers, body
end)

local bigs = 0            -- how many times /big was answered

local routes = {
  ["/hello"] = function(req)
    return 200, { ["Content-Type"] = "text/plain",
                  ["X-Version"] = req.version },
           "hello " .. tostring(req.headers.host) .. "\n"
  end,
  ["/headers"] = function(req)
    local lines = {}
    for k, v in pairs(req.headers) do lines[#lines + 1] = k .. "=" .. v end
    table.sort(lines)
    return 200, { ["Content-Type"] = "text/plain" },
           table.concat(lines, "\n") .. "\n"
  end,
  ["/big"] = function()
    bigs = bigs + 1
    return 200, {}, string.rep("0123456789abcdef", 65536)   -- 1 MiB
  end,
  ["/bigs"] = function() return 200, {}, "bigs " .. bigs end,
  ["/later"] = function()
    moonsocket.sleep(0.05)
    return 200, {}, "later\n"
  end,
  ["/echo"] = function(req)
    local body, err, code = req:body()
    if not body then      -- the core answered: the reader learns why
      io.stderr:write("no body: ", err, " ", code, "\n")
    end
    return 200, {}, body or ("no body: " .. tostring(err))
  end,
  ["/slow"] = function(req)
    local got = #assert(req:read(1024))
    assert(gate:get(30), "no /go")
    while true do
      local data, err = req:read(16384)
      if not data then
        return 200, {}, err and "failed: " .. err or "read " .. got
      end
      got = got + #data
    end
  end,
  ["/go"] = function()
    gate:put(true)
    return 200, {}, "go\n"
  end,
  ["/nocontent"] = function() return 204, {}, nil end,
  ["/fail"] = function() error("boom") end,
}

app:use(function(req, nxt)
  local route = routes[req.path]
  if route then return route(req) end
  return nxt()
end)
app:ws("/ws", require "moonsocket.handlers.echo")
if os.getenv("STATIC_DIR") then
  app:use(moonsocket.static(os.getenv("STATIC_DIR")))
end

local http2
if os.getenv("HTTP2") == "on" then http2 = true end
if os.getenv("HTTP2") == "off" then http2 = false end
local plain = assert(app:listen { port = tonumber(os.getenv("PORT")) or 0,
                                  http2 = http2 })
if os.getenv("CERT") then
  local tls = assert(app:listen { port = 0, http2 = http2,
    tls = { cert = os.getenv("CERT"), key = os.getenv("KEY") } })
  local _, port = tls:address()
  io.stderr:write("tls port ", port, "\n")
end
moonsocket.run()
