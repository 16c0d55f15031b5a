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
-- the upgrade hook for that.  Here the hook asks an auth service over
-- HTTP (moonsocket.http: the loop serves everyone while it waits): the
-- service at AUTH_URL, by default this server's own /auth/check.
local moonsocket = require "moonsocket"
local http = require "moonsocket.http"

local app = moonsocket.app {
  -- every route: pages of this site only (compared case-insensitively,
  -- default ports ignored); requests without Origin are not browsers
  allowed_origins = { "http://localhost:5001", "http://127.0.0.1:5001" },
  keep_alive_interval = 30,     -- ping quiet sockets so proxies keep them
  keep_alive_timeout = 10,      -- and close those that stop answering
}

local auth_url = os.getenv("AUTH_URL")  -- set once listening, if not given

-- The auth service: GET /auth/check?token=T answers 200 and the user's
-- name, or 401.  A real one lives elsewhere; this one stands in for it.
local sessions = { abc123 = "alice" }
app:use(function(req, next)
  if req.path ~= "/auth/check" then return next() end
  local user = sessions[req.args.token or ""]
  if not user then return 401, {}, "unknown token\n" end
  return 200, { ["Content-Type"] = "text/plain" }, user .. "\n"
end)

-- A chat route: a session cookie or ?token= is checked by the auth
-- service, the user travels to the handler as ws.data, and the client
-- picks a protocol version.
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
    local token = req.cookies.session or req.args.token
    if not token or not token:match("^%w+$") then
      return 401, { ["Content-Type"] = "text/plain" }, "log in first\n"
    end
    local status, _, body = http.request(auth_url .. "?token=" .. token,
                                         { timeout = 2 })
    if not status then                     -- the service did not answer
      return 503, { ["Content-Type"] = "text/plain" },
             "the auth service is down\n"
    end
    if status ~= 200 then
      return 401, { ["Content-Type"] = "text/plain" }, "log in first\n"
    end
    return { user = body:match("^%w+") }  -- becomes ws.data
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

local server = assert(app:listen { port = tonumber(os.getenv("PORT")) or 5001 })
if not auth_url then
  local host, port = server:address()
  auth_url = ("http://%s:%d/auth/check"):format(host, port)
end
moonsocket.run()
