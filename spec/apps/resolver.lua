-- Test app: name resolution in a handler.  /resolve answers each
-- message NAME with "ok ADDR,ADDR..." or "fail MESSAGE CODE" once
-- moonsocket.resolve returns; /echo answers at once.  Env: PORT, DNS
-- (the DNS server, "127.0.0.1:PORT").
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

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
