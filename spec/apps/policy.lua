-- Test app: the route policies and timeouts.  Env: PORT, MAX_CONNECTIONS,
-- LOG_LEVEL, LOG_FORMAT, ACCESS_LOG.
local moonsocket = require "moonsocket"

local events = {}
local function record(line) events[#events + 1] = line end

local app = moonsocket.app {
  max_connections = tonumber(os.getenv("MAX_CONNECTIONS")) or 100,
  log_level = os.getenv("LOG_LEVEL") or "info",
  log_format = os.getenv("LOG_FORMAT") or "text",
  access_log = os.getenv("ACCESS_LOG") == "1",
  close_timeout = 0.5,
  keep_alive_interval = 0,
}

local function handler(name)
  return {
    message = function(ws, msg)
      if msg == "who" then
        ws:send(tostring(ws.data.user))
      elseif msg == "protocol" then
        ws:send(tostring(ws.protocol))
      elseif msg == "bye" then
        ws:close(4001, "bye")
      elseif msg == "abort" then
        -- the close handler has run when abort returns
        ws:send("never seen: queued, then dropped")
        record(("%s abort %s %s"):format(name, tostring(ws:abort()),
                                         ws.state))
        local again = table.pack(ws:abort())
        record(("%s abort again %s %s %s"):format(name, tostring(again[1]),
                                                 again[2], again[3]))
      else
        ws:send(msg)
      end
    end,
    close = function(_, code, reason, why)
      record(("%s close %d %s %s"):format(name, code, reason, why))
    end,
  }
end

app:use(function(req, next)
  if req.path == "/events" then
    return 200, { ["Content-Type"] = "text/plain" },
      table.concat(events, "\n")
  elseif req.path == "/shutdown" then
    app:shutdown(2)
    return 200, {}, "shutting down"
  end
  return next()
end)

app:ws("/ws", handler("ws"))
app:ws("/kept", handler("kept"), { keep_request = true })
app:ws("/origins", handler("origins"), {
  allowed_origins = { "https://Example.com:443", "http://localhost:5000" },
})
app:ws("/originfn", handler("originfn"), {
  allowed_origins = function(origin) return origin == "https://ok.test" end,
})
app:ws("/auth", handler("auth"), {
  upgrade = function(req)
    local token = req.query and req.query:match("token=(%w+)")
    if token == "secret" or req.cookies.session == "abc" then
      return { user = "alice" }
    elseif token then
      return 401, { ["WWW-Authenticate"] = "Bearer" }, "bad token\n"
    end
    return false
  end,
})
-- the hook's verdict is named by the query
local VERDICTS = {
  ["true"] = function() return true end,
  table = function() return { user = "bob" } end,
  ["false"] = function() return false end,
  ["nil"] = function() return nil end,
  nothing = function() end,
  ["nil-denied"] = function() return nil, "denied" end,
  string = function() return "denied" end,
  raise = function() error("hook failed on purpose") end,
  crlf = function() return 401, { ["X-Bad"] = "a\r\nb" }, "no" end,
}
app:ws("/verdict", handler("verdict"), {
  upgrade = function(req) return VERDICTS[req.query]() end,
})
app:ws("/chat", handler("chat"), { subprotocols = { "chat.v2", "chat.v1" } })
app:ws("/chat-optional", handler("chat-optional"),
       { subprotocols = { "chat.v2" }, subprotocol_required = false })
app:ws("/choose", handler("choose"), {
  select_subprotocol = function(offered) return offered[#offered] end,
})
app:ws("/idle", handler("idle"), { idle_timeout = 0.4 })
app:ws("/keepalive", handler("keepalive"),
       { keep_alive_interval = 0.2, keep_alive_timeout = 0.3 })
app:ws("/small", handler("small"), { max_message_size = 10 })

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
