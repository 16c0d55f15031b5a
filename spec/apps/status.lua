-- Test app: moonsocket.status at /status and an echo at /echo.  Env:
-- PORT, STATUS_ALLOW (an address list, comma-separated; default the
-- module's, loopback), STATUS_INTERVAL (seconds), STATUS_PATH (another
-- path for the page, as "/" for spec/browser/status.test.mjs).
local moonsocket = require "moonsocket"

local allow
if os.getenv("STATUS_ALLOW") then
  allow = {}
  for addr in os.getenv("STATUS_ALLOW"):gmatch("[^,]+") do
    allow[#allow + 1] = addr
  end
end

local app = moonsocket.app { keep_alive_interval = 0 }
app:use(moonsocket.status {
  path = os.getenv("STATUS_PATH") or "/status", allow = allow,
  interval = tonumber(os.getenv("STATUS_INTERVAL")) or 1,
})
app:ws("/echo", { message = function(ws, msg, kind) ws:send(msg, kind) end })
assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
