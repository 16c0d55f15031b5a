-- Test app: coroutine handlers that wait.  /sleep waits its message's
-- seconds, then answers; /recv receives with a timeout and says
-- "timeout" when none came; /echo answers at once; /callback tries to
-- sleep in a callback handler.  Env: PORT.
local moonsocket = require "moonsocket"

local app = moonsocket.app {}

app:ws("/sleep", function(ws)
  while true do
    local msg = ws:receive()
    if not msg then return end
    moonsocket.sleep(tonumber(msg))
    ws:send("slept " .. msg)
  end
end)

app:ws("/recv", function(ws)
  while true do
    local msg, err = ws:receive(0.2)
    if msg then ws:send("got " .. msg)
    elseif err == "timeout" then ws:send("timeout " .. ws.state)
    else return end
  end
end)

app:ws("/echo", require "moonsocket.handlers.echo")

app:ws("/callback", {
  message = function(ws)
    local ok, err = pcall(moonsocket.sleep, 0.01)
    ws:send(tostring(ok) .. " " .. err)
  end,
})

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
