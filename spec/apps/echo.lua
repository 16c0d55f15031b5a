-- Test app: echo at /ws; env PORT, MAX_MESSAGE_SIZE and CLOSE_TIMEOUT.
-- /stall sends 16 MiB first and reads nothing until they are written,
-- then reads and discards: its client's sends wait on the kernel.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  max_message_size = tonumber(os.getenv("MAX_MESSAGE_SIZE"))
    or 16 * 1024 * 1024 + 1024,
  close_timeout = tonumber(os.getenv("CLOSE_TIMEOUT")) or 2,
}
app:ws("/ws", require "moonsocket.handlers.echo")
app:ws("/stall", function(ws)
  ws:send(("s"):rep(16 * 1024 * 1024), "binary")
  repeat until not ws:receive()
end)
assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
