-- An echo server that also reads its stdin with core.reader, a watcher
-- that never ends on its own.  RUN=app: the script calls
-- moonsocket.run() itself (else the runner does, once it returns).
local moonsocket = require "moonsocket"

local app = moonsocket.app()
app:ws("/ws", { message = function(ws, msg, kind) ws:send(msg, kind) end })
assert(app:listen { host = "127.0.0.1", port = tonumber(os.getenv("PORT")) })
local reader = moonsocket.core.reader(0, function() end)
if os.getenv("RUN") == "app" then
  moonsocket.run()
  io.stderr:write("run() returned\n")
end
return reader
