-- Connection policies: who may open a WebSocket, with which subprotocol,
-- and how long a silent one lives.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' build/moonsocket \
--     examples/policies/app.lua
--
-- Origin is sent by browsers and says which page opened the socket; any
-- other client can write whatever it likes there.  allowed_origins keeps
-- other sites' pages from using a visitor's browser (and cookies) against
-- you; it is not authentication: check a token or a session cookie in
-- the upgrade hook for that.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  -- every route: pages of this site only (compared case-insensitively,
  -- default ports ignored); requests without Origin are not browsers
  allowed_origins = { "http://localhost:5001", "http://127.0.0.1:5001" },
  keep_alive_interval = 30,     -- ping quiet sockets so proxies keep them
  keep_alive_timeout = 10,      -- and close those that stop answering
}

local sessions = { abc123 = "alice" }    -- stands in for a session store

-- A chat route: a session cookie or ?token= decides, the user travels to
-- the handler as ws.data, and the client picks a protocol version.
app:ws("/chat", {
  open = function(ws)
    ws:send(("hello %s, you speak %s"):format(ws.data.user, ws.protocol))
  end,
  message = function(ws, msg) ws:send(ws.data.user .. ": " .. msg) end,
  close = function(ws, code, reason, why)
    print(("%s left: %d %s (%s)"):format(ws.data.user, code, reason, why))
  end,
}, {
  subprotocols = { "chat.v2", "chat.v1" },
  upgrade = function(req)
    local token = req.cookies.session
      or (req.query and req.query:match("token=(%w+)"))
    local user = sessions[token]
    if not user then
      return 401, { ["Content-Type"] = "text/plain" }, "log in first\n"
    end
    return { user = user }                 -- becomes ws.data
  end,
})

-- The pattern for detecting dead clients: the client pings every X
-- seconds (browsers' WebSocket cannot; send a small message instead),
-- and the server closes after 2 * X of silence.
local X = 15
app:ws("/feed", require "moonsocket.handlers.echo", {
  idle_timeout = 2 * X,
  -- a policy function instead of the list: any subdomain of example.com
  allowed_origins = function(origin)
    return origin ~= nil and origin:match("^https://[%w-]+%.example%.com$")
      ~= nil
  end,
})

assert(app:listen { port = tonumber(os.getenv("PORT")) or 5001 })
moonsocket.run()
