-- The recovery benchmark's app (bench/recovery.lua, loadgen recover,
-- spec/recover_spec.lua), one process:
--   /r           subscribes to "room", which keeps its last HISTORY
--                messages (100); sends "welcome <recovered> <position>"
--   /r?POSITION  the same with since = POSITION ("epoch:offset"): the
--                messages after it come first, each as "<epoch>:<offset>
--                <payload>", then the welcome
--   /ws          text commands (a callback handler):
--                  "since POS"  subscribes as /r?POS does ("since -": as
--                               /r), answered by the same welcome
--                  "pub N"      N messages of 64 bytes ("x") to "room":
--                               "pub POS", the room's position after them
--                  "count"      "count N", the sockets subscribed to
--                               "room" (of this process)
--                  "pid"        "pid W", this worker's number (0 without
--                               workers)
--   /co, /ctl    the same commands, each connection a coroutine: with
--                WORKERS or REDIS_URL, where a publish waits for its
--                position from the master or Redis, and a subscribe
--                with since waits for a worker that is behind to catch
--                up (a callback handler cannot wait: its publish gives
--                no position)
-- Quiet (log_level "error"), 20,000 connections, no keep-alive pings.
-- env HOST, PORT (0: any), HISTORY, WORKERS (passed on when set),
-- REDIS_URL (when set: the history in Redis, app:use_backplane).
local moonsocket = require "moonsocket"

local getenv, tonumber = os.getenv, tonumber

local app = moonsocket.app {
  log_level = "error",               -- the default logs every connection
  max_connections = 20000,
  keep_alive_interval = 0,
}
local redis_url = getenv("REDIS_URL")
if redis_url and redis_url ~= "" then
  assert(app:use_backplane { redis = redis_url })
  app:on_start(function()              -- bench/recovery.lua waits for it
    while not app.backplane.connected do moonsocket.sleep(0.01) end
    io.stderr:write("moonsocket: redis connected\n")
  end)
end
app:history("room", { size = tonumber(getenv("HISTORY")) or 100 })

local PAYLOAD = ("x"):rep(64)

local function text(position)
  return position.epoch .. ":" .. position.offset
end

-- The recovered messages (when since is given) are queued before the
-- welcome: nothing can be published between the two in one handler.
local function subscribe(ws, since)
  local ok, info = ws:subscribe("room", { since = since })
  if ok then
    ws:send(("welcome %s %s"):format(info.recovered, text(info.position)))
  end
end

local function command(ws, msg)
  local n = tonumber(msg:match("^pub (%d+)$"))
  if n then
    local _, position
    for _ = 1, n do _, position = app:publish("room", PAYLOAD) end
    if n == 0 then _, position = app:history_read("room", { limit = 0 }) end
    ws:send("pub " .. text(position))
    return
  end
  local since = msg:match("^since (%S+)$")
  if since then
    subscribe(ws, since ~= "-" and since or nil)
  elseif msg == "count" then
    ws:send("count " .. app:subscribers("room"))
  elseif msg == "pid" then
    ws:send("pid " .. (moonsocket.worker() or 0))
  else
    ws:close(1008, "expected since POS, pub N, count or pid")
  end
end

app:ws("/r", {
  open = function(ws) subscribe(ws, ws.request.query) end,
})

local function commands(ws)
  while true do
    local msg = ws:receive()
    if not msg then return end
    command(ws, msg)
  end
end

app:ws("/ws", { message = command })
app:ws("/co", commands)
app:ws("/ctl", commands)

assert(app:listen {
  host = getenv("HOST") or "127.0.0.1",
  port = tonumber(getenv("PORT")) or 0,
  backlog = 16384,
  workers = tonumber(getenv("WORKERS")),
})
moonsocket.run()
