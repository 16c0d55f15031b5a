-- The soak's echo (bench/soak.py): the benchmark's echo at /ws, plus
-- GET /memory, which runs a full garbage collection and answers the Lua
-- heap in KiB, so that a reading does not depend on the collector's
-- timing, and GET /heap, which answers it as it is, garbage included.
-- Warnings are logged: the soak fails on any.  Env: PORT, HOST,
-- BACKLOG.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "warn",
  max_message_size = 16 * 1024 * 1024,
  max_connections = 20000,
  keep_alive_interval = 0,
}

app:use(function(req, next)
  if req.path == "/heap" then          -- as it is, garbage included
    return 200, { ["Content-Type"] = "text/plain" },
      string.format("lua_kib=%.1f\n", collectgarbage("count"))
  end
  if req.path == "/memory" then
    collectgarbage("collect")
    collectgarbage("collect")          -- what finalizers released
    return 200, { ["Content-Type"] = "text/plain" },
      string.format("lua_kib=%.1f\n", collectgarbage("count"))
  end
  return next()
end)

app:ws("/ws", require "moonsocket.handlers.echo")

assert(app:listen {
  host = os.getenv("HOST") or "127.0.0.1",
  port = tonumber(os.getenv("PORT")) or 0,
  -- a churn of thousands of connections a second comes in bursts that
  -- overflow the default 511 (the kernel drops SYNs; clients retry 1 s,
  -- 3 s ... later); net.core.somaxconn caps it
  backlog = tonumber(os.getenv("BACKLOG")) or 4096,
})
moonsocket.run()
