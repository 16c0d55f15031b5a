-- The fan-out benchmark's app at /ws (loadgen fanout), in text messages:
--   sub TOPIC   this socket subscribes to TOPIC; answered "ok"
--   pub TOPIC   every message this socket sends from now on, text or
--               binary, goes to TOPIC's subscribers but itself
--               (ws:publish); answered "ok N", N = app:subscribers(TOPIC)
-- Quiet, 20,000 connections, no keep-alive pings.  env HOST, PORT;
-- MAX_BACKPRESSURE (bytes), CLOSE_TIMEOUT (seconds): those options, when
-- set (spec/fanout_spec.lua); WORKERS: processes to serve with (passed
-- on only when set); REDIS_URL: topics shared through Redis
-- (app:use_backplane, only when set).
local moonsocket = require "moonsocket"

local tonumber, getenv = tonumber, os.getenv

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_connections = 20000,
  keep_alive_interval = 0,
  max_backpressure = tonumber(getenv("MAX_BACKPRESSURE")),
  close_timeout = tonumber(getenv("CLOSE_TIMEOUT")),
}

local redis_url = getenv("REDIS_URL")
if redis_url and redis_url ~= "" then
  assert(app:use_backplane { redis = redis_url })
end

app:ws("/ws", {
  message = function(ws, msg, kind)
    local topic = ws.data.publishes_to
    if topic then
      ws:publish(topic, msg, kind)
      return
    end
    local command, name = msg:match("^(%l+) (.+)$")
    if command == "sub" then
      ws:subscribe(name)
      ws:send("ok")
    elseif command == "pub" then
      ws.data.publishes_to = name
      ws:send("ok " .. app:subscribers(name))
    else
      ws:close(1008, "expected sub TOPIC or pub TOPIC")
    end
  end,
})

local listen = {
  host = getenv("HOST") or "127.0.0.1",
  port = tonumber(getenv("PORT")) or 0,
}
if getenv("WORKERS") and getenv("WORKERS") ~= "" then
  -- a number, or "auto" (one per CPU)
  listen.workers = tonumber(getenv("WORKERS")) or getenv("WORKERS")
end
assert(app:listen(listen))
moonsocket.run()
