-- Test app: echo at /ws (compression on) and /slow (message_timeout
-- 3 s); env PORT, MESSAGE_TIMEOUT, MAX_INCOMPLETE_BYTES.  /events lists
-- the close events.
local moonsocket = require "moonsocket"

local events = {}

local app = moonsocket.app {
  max_message_size = 1024 * 1024,
  compression = true,
  message_timeout = tonumber(os.getenv("MESSAGE_TIMEOUT")),
  max_incomplete_bytes = tonumber(os.getenv("MAX_INCOMPLETE_BYTES")),
}

app:use(function(req, next)
  if req.path == "/events" then
    return 200, { ["Content-Type"] = "text/plain" },
      table.concat(events, "\n")
  end
  return next()
end)

local echo = {
  message = function(ws, data, kind)
    ws:send(data, kind, { compress = false })
  end,
  close = function(_, code, reason, why)
    events[#events + 1] = ("closed %d %s %s"):format(code, reason, why)
  end,
}
app:ws("/ws", echo)
app:ws("/slow", echo, { message_timeout = 3 })

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
