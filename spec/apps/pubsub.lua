-- Test app: topics driven by the clients' text messages at /ws.
--   sub T / unsub T / subscribed T   -> "sub T true" etc.
--   pub T MSG / pubbin T MSG         -> app:publish, "pub N"
--   pubbig T N                       -> N bytes of 'x' to T, "pub N"
--   pub2 T U N                       -> N bytes to T, then to U, in one
--     handler call (nothing is written between): "pub2 N M B", B the
--     bytes the socket that sent "nest U" had queued before
--   buffered T                       -> "buffered B" of that socket
--   wspub T MSG                      -> ws:publish (not to itself)
--   count T                          -> "count N"
--   topics                           -> "topics A,B"
--   nest T                           -> when this socket closes, its
--     close handler publishes "gone" to T and closes every socket that
--     sent "victim": closing and publishing while a publish runs.  The
--     close handler also records its arguments: "closed T" -> "closed
--     CODE UNSENT" of the last socket that closed with nest T.
--   victim
--   pid                              -> "pid PID WORKER"
--   scope                            -> "scope", then close 1000 (<close>)
--   bp                               -> "bp true" when the backplane is
--     connected, "bp false" when not, "bp nil" without one
-- env PORT, MAX_BACKPRESSURE, WORKERS; REDIS_URL: use a Redis backplane
-- (BP_MAX_PENDING: its max_pending); DNS: the DNS server that resolves
-- its host ("127.0.0.1:PORT").
local moonsocket = require "moonsocket"

if os.getenv("DNS") then
  assert(moonsocket.resolver { servers = { os.getenv("DNS") } })
end

local app = moonsocket.app {
  max_backpressure = tonumber(os.getenv("MAX_BACKPRESSURE")) or 1024 * 1024,
}

if os.getenv("REDIS_URL") then
  app:use_backplane { redis = os.getenv("REDIS_URL"),
                      max_pending = tonumber(os.getenv("BP_MAX_PENDING")) }
end

local victims = {}
local closed = {}           -- nest topic -> "CODE UNSENT"
local nesters = {}          -- nest topic -> the socket that sent it

local function reply(ws, ...)
  ws:send(table.concat({ ... }, " "))
end

app:ws("/ws", {
  message = function(ws, msg)
    local cmd, topic, rest = msg:match("^(%S+) ?(%S*) ?(.*)$")
    if cmd == "sub" then
      reply(ws, "sub", topic, tostring(ws:subscribe(topic)))
    elseif cmd == "unsub" then
      reply(ws, "unsub", topic, tostring(ws:unsubscribe(topic)))
    elseif cmd == "subscribed" then
      reply(ws, "subscribed", topic, tostring(ws:subscribed(topic)))
    elseif cmd == "pub" then
      reply(ws, "pub", app:publish(topic, rest))
    elseif cmd == "pubbin" then
      reply(ws, "pub", app:publish(topic, rest, "binary"))
    elseif cmd == "pubbig" then       -- pubbig T N: N bytes of 'x'
      reply(ws, "pub", app:publish(topic, ("x"):rep(tonumber(rest))))
    elseif cmd == "pub2" then
      local second, n = rest:match("^(%S+) (%d+)$")
      local payload = ("x"):rep(tonumber(n))
      local queued = nesters[second] and nesters[second].buffered_amount
      reply(ws, "pub2", app:publish(topic, payload),
            app:publish(second, payload), tostring(queued))
    elseif cmd == "buffered" then
      reply(ws, "buffered", tostring(nesters[topic]
                                     and nesters[topic].buffered_amount))
    elseif cmd == "wspub" then
      reply(ws, "wspub", ws:publish(topic, rest))
    elseif cmd == "count" then
      reply(ws, "count", topic, app:subscribers(topic))
    elseif cmd == "topics" then
      reply(ws, "topics", table.concat(ws.topics, ","))
    elseif cmd == "nest" then
      ws.data.nest = topic
      nesters[topic] = ws
      reply(ws, "nest", topic)
    elseif cmd == "pid" then          -- which process serves this socket
      local f = assert(io.open("/proc/self/stat"))
      reply(ws, "pid", f:read("n"), tostring(moonsocket.worker()))
      f:close()
    elseif cmd == "bp" then
      reply(ws, "bp", tostring(app.backplane and app.backplane.connected))
    elseif cmd == "scope" then        -- leaving a <close> scope closes
      local w <close> = ws
      reply(w, "scope")
    elseif cmd == "closed" then
      reply(ws, "closed", closed[topic] or "none")
    elseif cmd == "victim" then
      victims[ws] = true
      reply(ws, "victim")
    end
  end,
  close = function(ws, code, _, _, unsent)
    victims[ws] = nil
    local topic = ws.data.nest
    if topic then
      closed[topic] = code .. " " .. unsent
      for v in pairs(victims) do
        v:close(4000, "closed by a close handler")
        v:unsubscribe(topic)
      end
      app:publish(topic, "gone")
    end
  end,
})
assert(app:listen { port = tonumber(os.getenv("PORT")) or 0,
                    workers = tonumber(os.getenv("WORKERS")) })
moonsocket.run()
