-- The app of policy_spec's routes opened without the pipeline: plain
-- WebSocket routes that no middleware comes before are opened by the
-- core itself; a route with hooks, a later route of the same path and
-- the routes after a middleware go through the pipeline.  It logs at
-- info: the open and close lines name the peer and target either way.
local moonsocket = require "moonsocket"

local app = moonsocket.app { log_level = "info", keep_alive_interval = 0 }

-- Its first message tells the route, the path and a header of
-- ws.request.
local function handler(name)
  return {
    open = function(ws)
      ws:send(("%s %s %s"):format(name, ws.request.path,
                                  tostring(ws.request.headers["x-who"])))
    end,
    message = function(ws, msg) ws:send(msg) end,
  }
end

app:ws("/first", handler("first"))
app:ws("/hooked", handler("hooked"), {
  upgrade = function(req) return req.headers["x-who"] == "ok" end,
})
app:ws("/first", handler("first again"))       -- never: the first wins
app:ws("/hooked", handler("hooked again"))     -- never: the hooked wins
app:use(function(req, next)
  if req.path == "/late" then return 403, {}, "refused\n" end
  return next()
end)
app:ws("/late", handler("late"))               -- never: refused first
app:ws("/after", handler("after"))

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0 })
moonsocket.run()
