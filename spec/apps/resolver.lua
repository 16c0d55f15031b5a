-- Test app: name resolution in a handler.  /resolve answers each
-- message NAME with "ok ADDR,ADDR..." or "fail MESSAGE CODE" once
-- moonsocket.resolve returns; /echo answers at once; /shutdown starts a
-- lookup of the name its first message gives, whose answer it would
-- log ("answered ..."), and shuts down.  Env: PORT, DNS (the DNS
-- server, "127.0.0.1:PORT").
local moonsocket = require "moonsocket"

assert(moonsocket.resolver { servers = { os.getenv("DNS") } })

local app = moonsocket.app {}

app:ws("/resolve", function(ws)
  while true do
    local name = ws:receive()
    if not name then return end
    local addrs, err, code = moonsocket.resolve(name)
    if addrs then ws:send("ok " .. table.concat(addrs, ","))
    else ws:send("fail " .. err .. " " .. code) end
  end
end)

app:ws("/echo", require "moonsocket.handlers.echo")

app:ws("/shutdown", function(ws)
  moonsocket.core.resolve(ws:receive(), function(_, addrs, err)
    io.stderr:write("answered ", tostring(addrs and addrs[1] or err), "\n")
  end)
  moonsocket.shutdown(2)
end)

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
