-- Test app for spec/lost_spec.lua: what each handler accepted, and the
-- messages its close event says were lost.  A socket's first message is
-- its name.  Lines on stdout when a socket closes:
--   echo NAME GOT QUEUED REFUSED CODE UNSENT
--     /echo (callbacks) and /echo-co (a coroutine): every message is
--     sent back; GOT messages arrived, QUEUED sends were taken, REFUSED
--     returned nil (the socket was closing); a message ending in ":end"
--     prints "end NAME" when it arrives at /echo
--   sub NAME ACCEPTED CODE UNSENT
--     /sub and /sub-slow: subscribed to "t" after its name; ACCEPTED
--     publishes were queued to it.  /sub-slow tolerates any backlog.
-- /pub: "pub N SIZE" publishes N messages "SEQ:" padded to SIZE bytes
-- (SEQ counts from 1 over the server's life) and answers "pub SEQ".
-- env PORT, MAX_BACKPRESSURE (for /echo, /echo-co and /sub),
-- CLOSE_TIMEOUT.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "warn",
  close_timeout = tonumber(os.getenv("CLOSE_TIMEOUT")) or 1,
  max_backpressure = tonumber(os.getenv("MAX_BACKPRESSURE")) or 1024 * 1024,
  keep_alive_interval = 0,
}

local function say(...)
  io.stdout:write(table.concat({ ... }, " "), "\n")
  io.stdout:flush()
end

app:ws("/echo", {
  message = function(ws, msg, kind)
    local d = ws.data
    if not d.name then d.name, d.got, d.queued, d.refused = msg, 0, 0, 0 end
    d.got = d.got + 1
    if ws:send(msg, kind) then d.queued = d.queued + 1
    else d.refused = d.refused + 1 end
    if msg:sub(-4) == ":end" then say("end", d.name) end
  end,
  close = function(ws, code, _, _, unsent)
    local d = ws.data
    say("echo", d.name, d.got, d.queued, d.refused, code, unsent)
  end,
})

app:ws("/echo-co", function(ws)
  local name, got, queued, refused = nil, 0, 0, 0
  while true do
    local msg, kind, code, _, _, unsent = ws:receive()
    if not msg then
      say("echo", name, got, queued, refused, code, unsent)
      return
    end
    name = name or msg
    got = got + 1
    if ws:send(msg, kind) then queued = queued + 1
    else refused = refused + 1 end
  end
end)

local published = 0

local subscriber = {
  message = function(ws, msg)
    if ws.data.name then return end
    ws.data.name, ws.data.from = msg, published
    ws:subscribe("t")
    ws:send("ready")
  end,
  -- a socket leaves its topics when it stops being open: what was
  -- published until then was offered to it
  close = function(ws, code, _, _, unsent)
    local d = ws.data
    say("sub", d.name, published - d.from, code, unsent)
  end,
}
app:ws("/sub", subscriber)
app:ws("/sub-slow", subscriber, { max_backpressure = 1 << 30 })

app:ws("/pub", {
  message = function(ws, msg)
    local n, size = msg:match("^pub (%d+) (%d+)$")
    for _ = 1, tonumber(n) do
      local head = published + 1 .. ":"
      app:publish("t", head .. ("x"):rep(tonumber(size) - #head))
      published = published + 1       -- counted once it was offered
    end
    ws:send("pub " .. published)
  end,
})

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
