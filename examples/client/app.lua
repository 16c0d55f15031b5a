-- A command-line WebSocket client, like wscat:
--   moonsocket examples/client/app.lua ws://host:port/path
-- (from the source tree: LUA_PATH='lua/?.lua;lua/?/init.lua;;'
-- build/moonsocket examples/client/app.lua ws://host:port/path)
-- sends each line of stdin as a text message and prints each message it
-- receives; ends when the server closes, or when stdin has ended and as
-- many messages came back as were sent (close 1000): piped into an echo
-- server, every answer is printed first, as the client drops what
-- arrives after its close frame (RFC 6455 section 7.1.2).
local moonsocket = require "moonsocket"
local core = moonsocket.core

local url = arg[1]
if not url then
  io.stderr:write("usage: moonsocket examples/client/app.lua URL\n")
  os.exit(2)
end

local stdin, pending = nil, ""
local sent, received, ended = 0, 0, false

local function send(ws, line)
  if ws:send(line) then sent = sent + 1 end
end

local function maybe_close(ws)
  if ended and received >= sent and ws.state == "open" then
    ws:close(1000)
  end
end

local ws = moonsocket.connect(url, {
  handler = {
    open = function(ws)
      io.stderr:write("connected to ", url, "\n")
      -- stdin is read on the loop, beside the socket
      stdin = core.reader(0, function(data)
        if not data then                       -- end of input
          if pending ~= "" then send(ws, pending) end
          ended = true
          maybe_close(ws)
          return
        end
        pending = pending .. data
        for line in pending:gmatch("([^\n]*)\n") do send(ws, line) end
        pending = pending:match("[^\n]*$")
      end)
    end,
    message = function(ws, data)
      io.stdout:write(data, "\n")
      io.stdout:flush()
      received = received + 1
      maybe_close(ws)
    end,
    close = function(_, code, reason, why)
      if stdin then stdin:close() end
      io.stderr:write("closed ", code, " ", reason, " (", why, ")\n")
      if why ~= "local" and why ~= "peer" then os.exit(1) end
    end,
  },
})
