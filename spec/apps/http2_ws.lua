-- Test app for spec/http2_ws_spec.lua: WebSocket routes reached over
-- HTTP/2 (RFC 8441) on a plain port with prior knowledge and, with CERT
-- and KEY, a TLS port (ALPN h2).  Every close is printed as
-- "closed PATH CODE WHY VERSION".  Env: PORT, CERT, KEY, WINDOW_TIMEOUT
-- (send_window_timeout).
local moonsocket = require "moonsocket"

local app = moonsocket.app { close_timeout = 1,
  send_window_timeout = tonumber(os.getenv("WINDOW_TIMEOUT")) }

local function closed(path)
  return function(ws, code, _, why)
    io.stderr:write(("closed %s %d %s %s\n"):format(path, code, why,
      ws.http_version))
  end
end

-- "version": ws.http_version; "flood N SIZE": N messages of SIZE bytes,
-- "shutdown": the server shuts down gracefully; anything else: echoed
local commands = {
  version = function(ws) ws:send(ws.http_version) end,
  flood = function(ws, n, size)     -- one a millisecond
    local chunk, left = ("x"):rep(tonumber(size)), tonumber(n)
    local function more()
      if left == 0 or ws.state ~= "open" then return end
      left = left - 1
      if ws:send(chunk, "binary") then moonsocket.after(0.001, more) end
    end
    more()
  end,
  shutdown = function(ws)
    ws:send("bye")
    moonsocket.shutdown(3)
  end,
}

local function echo(path)
  return {
    message = function(ws, msg, kind)
      local name, a, b = msg:match("^(%a+) ?(%d*) ?(%d*)$")
      if kind == "text" and commands[name] then
        commands[name](ws, a, b)
      else
        ws:send(msg, kind)
      end
    end,
    close = closed(path),
  }
end

app:ws("/echo", echo("/echo"))
app:ws("/co", function(ws)
  while true do
    local msg, kind = ws:receive()
    if not msg then break end
    ws:send(msg, kind)
  end
  io.stderr:write("closed /co ", ws.http_version, "\n")
end)
app:ws("/auth", echo("/auth"), {
  upgrade = function(req) return req.headers["x-token"] == "yes" end,
})
app:ws("/chat", echo("/chat"), { subprotocols = { "chat.v1", "chat.v2" } })
app:ws("/deflate", echo("/deflate"), { compression = true })
app:ws("/slow", echo("/slow"), { max_backpressure = 65536 })
-- pub/sub: each joins "room" (and is told so); what one sends reaches all
app:ws("/room", {
  open = function(ws)
    ws:subscribe("room")
    ws:send("joined " .. app:subscribers("room"))
  end,
  message = function(_, msg, kind) app:publish("room", msg, kind) end,
  close = closed("/room"),
})
-- keep-alive: a ping every 0.2 s, 0.5 s to answer it
app:ws("/ping", echo("/ping"),
  { keep_alive_interval = 0.2, keep_alive_timeout = 0.5 })
-- "fill SIZE": messages of SIZE bytes until send says "queued"; the
-- drain event then says "drained"
app:ws("/drain", {
  message = function(ws, msg)
    local chunk = ("x"):rep(tonumber(msg:match("^fill (%d+)$")))
    local n, status = 0, "sent"
    while status == "sent" and n < 1000 do
      n = n + 1
      status = ws:send(chunk, "binary")
    end
    ws:send(("%s after %d"):format(status, n))
  end,
  drain = function(ws) ws:send("drained") end,
  close = closed("/drain"),
})
app:use(function(req)
  if req.path == "/page" then return 200, {}, "a page\n" end
end)

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0, http2 = true })
if os.getenv("CERT") then
  local tls = assert(app:listen { port = 0,
    tls = { cert = os.getenv("CERT"), key = os.getenv("KEY") } })
  local _, port = tls:address()
  io.stderr:write("tls port ", port, "\n")
end
moonsocket.run()
