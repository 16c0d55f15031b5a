-- Test app: WebSocket routes whose messages are commands, and an HTTP
-- route reporting what the handlers saw.  Env: PORT, MAX_BACKPRESSURE,
-- KEEP_ALIVE, CLOSE_TIMEOUT, HANDSHAKE_TIMEOUT, HOST.
local moonsocket = require "moonsocket"

local events = {}
local function record(line) events[#events + 1] = line end

local app = moonsocket.app {
  max_backpressure = tonumber(os.getenv("MAX_BACKPRESSURE")) or 1048576,
  keep_alive_interval = tonumber(os.getenv("KEEP_ALIVE")) or 0,
  close_timeout = tonumber(os.getenv("CLOSE_TIMEOUT")) or 1,
  handshake_timeout = tonumber(os.getenv("HANDSHAKE_TIMEOUT")) or 10,
}

app:use(function(req, next)
  if req.path == "/events" then
    return 200, { ["Content-Type"] = "text/plain" },
      table.concat(events, "\n")
  elseif req.path == "/fail" then
    error("middleware failed on purpose")
  elseif req.path == "/bad-header" then
    return 200, { ["X-Evil"] = "a\r\nInjected: yes" }, "no"
  end
  return next()
end)

local function flood(ws, count, size)
  local tally = { sent = 0, queued = 0 }
  local payload = string.rep("x", size)
  for _ = 1, count do
    local status, err, code = ws:send(payload, "binary")
    if not status then
      record("flood stopped: " .. err .. " " .. code)
      return
    end
    tally[status] = tally[status] + 1
  end
  record(("flood sent=%d queued=%d"):format(tally.sent, tally.queued))
  ws:send("flood done")
end

app:ws("/ws", {
  open = function(ws)
    ws.data.count = 0
    -- ws.request is gone after open: keep what later messages need
    ws.data.probe = ws.request.headers["x-probe"]
    ws.data.addr = ws.request.remote_addr
    record("open " .. ws.request.path .. " " .. (ws.request.query or "")
           .. " " .. ws.state)
  end,
  message = function(ws, msg)
    if ws.state ~= "open" then          -- sent before our close arrived
      local status, _, code = ws:send(msg)
      record(("late %s %s %s"):format(msg, tostring(status), code))
      return
    end
    ws.data.count = ws.data.count + 1
    local command, a, b = msg:match("^(%w+):?(%d*):?(%d*)")
    if command == "boom" then
      error("handler failed on purpose")
    elseif command == "close" then
      ws:close(4000, "bye")
    elseif command == "info" then
      ws:send(("%s %s %s %d"):format(ws.data.probe, ws.data.addr, ws.state,
        ws.data.count))
    elseif command == "request" then
      ws:send(select(2, pcall(function() return ws.request end)))
    elseif command == "flood" then
      flood(ws, tonumber(a), tonumber(b))
    elseif command == "ping" then
      ws:ping("server ping")
    elseif command == "badtext" then
      ws:send("\xff\xfe", "text")
    elseif command == "misuse" then
      local _, e1 = pcall(ws.send, 42, "x")
      local _, e2 = pcall(ws.send, ws, "x", "bogus")
      local _, e3 = pcall(ws.close, ws, 1005)
      local _, e4 = pcall(ws.send, ws)
      local _, e5 = pcall(ws.send, ws, {}, "binary")
      local _, e6 = pcall(ws.send, ws, "x", "text", 5)
      local _, e7 = pcall(ws.send, ws, "x", 7)
      ws:send(table.concat({ e1, e2, e3, e4, e5, e6, e7 }, "\n"))
    end
  end,
  drain = function(ws)
    record("drain " .. ws.buffered_amount)
  end,
  pong = function(_, data)
    record("pong " .. data)
  end,
  close = function(ws, code, reason)
    record(("close %d %s %s"):format(code, reason, ws.state))
  end,
})

app:ws("/co", function(ws)
  local msg = ws:receive()
  local count, size = msg:match("^flood:(%d+):(%d+)")
  local payload = string.rep("y", tonumber(size))
  for _ = 1, tonumber(count) do
    assert(ws:send(payload, "binary"))
  end
  ws:send("flood done")
  local _, err, code = ws:receive()
  record(("co receive %s %s"):format(err, code))
end)

-- ws.request kept for the connection's life
app:ws("/kept", {
  message = function(ws)
    ws:send(("%s %s"):format(ws.request.target, ws.request.headers["x-probe"]))
  end,
}, { keep_request = true })

-- ws.request kept beside ws.data: made in a message after the raw head
-- was kept, and made in open after the request was
app:ws("/kept-data", {
  message = function(ws)
    ws.data.n = (ws.data.n or 0) + 1
    ws:send(("%s %s %d"):format(ws.request.target,
      ws.request.headers["x-probe"], ws.data.n))
  end,
}, { keep_request = true })
app:ws("/kept-open", {
  open = function(ws)
    local path = ws.request.path
    ws.data.path = path
  end,
  message = function(ws)
    ws:send(("%s %s"):format(ws.data.path, ws.request.target))
  end,
}, { keep_request = true })

-- a coroutine has ws.request until it first waits
app:ws("/co-request", function(ws)
  ws:send(ws.request.target)
  ws:receive()
  ws:send(select(2, pcall(function() return ws.request end)))
  ws:receive()
end)

-- a handler whose missing fields raise, as "strict" classes do
app:ws("/strict", setmetatable({
  message = function(ws, msg) ws:send(msg) end,
}, { __index = function(_, key) error("no field " .. key) end }))

app:ws("/yield", function(ws)
  ws:send("about to yield")
  coroutine.yield()
end)

-- greets with three messages at once; records how it closed
app:ws("/greet", {
  open = function(ws)
    if ws.request.query == "big" then      -- 64 messages of 1 MiB
      local mib = string.rep("g", 1024 * 1024)
      for _ = 1, 64 do ws:send(mib, "binary") end
      return
    end
    for _, word in ipairs{ "one", "two", "three" } do ws:send(word) end
  end,
  close = function(_, code, reason, why, unsent)
    record(("greet closed %d %s %s %d"):format(code, reason, why, unsent))
  end,
})

app:ws("/co-greet", function(ws)
  for _, word in ipairs{ "one", "two", "three" } do ws:send(word) end
  local _, err, code, reason, why, unsent = ws:receive()
  record(("co-greet %s %d %s %s %d"):format(err, code, reason, why, unsent))
end)

assert(app:listen { host = os.getenv("HOST"),
                    port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
