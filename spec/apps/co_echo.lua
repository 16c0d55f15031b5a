-- Test app: echo at /ws; env PORT, MAX_MESSAGE_SIZE and CLOSE_TIMEOUT.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  max_message_size = tonumber(os.getenv("MAX_MESSAGE_SIZE"))
    or 16 * 1024 * 1024 + 1024,
  close_timeout = tonumber(os.getenv("CLOSE_TIMEOUT")) or 2,
}
app:ws("/ws", require "moonsocket.handlers.echo_coroutine")
assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
