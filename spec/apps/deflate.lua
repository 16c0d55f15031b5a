-- Test app: echo routes with permessage-deflate configurations.
-- Env: PORT.  A message "plain:<text>" is answered uncompressed.
local moonsocket = require "moonsocket"

local app = moonsocket.app { max_message_size = 1000000,
                             compression = { threshold = 16 } }

local echo = {
  message = function(ws, msg, kind)
    local plain = msg:match("^plain:(.*)")
    if plain then
      ws:send(plain, kind, { compress = false })
    elseif msg == "compressed?" then
      ws:send(tostring(ws.compressed))
    else
      ws:send(msg, kind)
    end
  end,
}

app:ws("/ws", echo)
app:ws("/no-takeover", echo, { compression = {
  server_no_context_takeover = true, client_no_context_takeover = true,
  threshold = 16 } })
app:ws("/small-window", echo, { compression = {
  server_max_window_bits = 9, client_max_window_bits = 9, mem_level = 1,
  threshold = 16 } })
app:ws("/off", echo, { compression = false })
app:ws("/co", function(ws)
  while true do
    local msg, kind = ws:receive()
    if not msg then return end
    ws:send(msg, kind)
  end
end)

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
