-- Test app: topic history, driven by the clients' text messages at /ws.
--   sub T                  -> ws:subscribe(T): "sub T true"
--   since T [POS]          -> ws:subscribe(T, { since = POS }) (POS
--     "epoch:offset", none: {}): "since OK RECOVERED EPOCH:OFFSET", or
--     "since nil MESSAGE CODE"; the recovered messages come before it
--   ready T [POS]          -> ws:subscribe(T, { since = POS, ready = fn }):
--     fn answers "ready OK RECOVERED EPOCH:OFFSET" (or "ready nil MESSAGE
--     CODE"), the recovered messages before it; "ready raise": fn raises
--   readynow T             -> ws:subscribe(T, { ready = fn }), fn saying
--     what it got (each value): "readynow ready VALUE...,returned" when
--     fn ran before ws:subscribe returned
--   readybad T             -> ws:subscribe(T, { ready = 1 }) raises:
--     "readybad ERROR"
--   pub T MSG / pubbin T MSG -> app:publish: "pub N EPOCH:OFFSET", or
--     "pub nil MESSAGE CODE"
--   wspub T MSG            -> ws:publish: "wspub N EPOCH:OFFSET"
--   plain T MSG            -> app:publish to a topic without history:
--     "plain N" and nothing more
--   burst T N              -> N publishes in one handler call: "burst LAST"
--   start T N              -> publish N messages every millisecond until
--     stop: "started"
--   stop                   -> "stopped EPOCH:OFFSET" of the last one
--   read T [POS] [LIMIT] [reverse] -> app:history_read:
--     "read OFF,OFF,... EPOCH:OFFSET" or "read nil MESSAGE CODE"
--   data T POS             -> the data and kind kept after POS, one:
--     "data KIND DATA"
--   fill T N               -> sends itself N bytes (a client that does
--     not read is then over max_backpressure), then publishes "filled"
--     to the topic "filled"; when it closes, its handler publishes
--     "bye" to T
--   psub T                 -> ws:subscribe(T, { presence = {} }): "psub T
--     true"; on_presence publishes "left" to T (topics "p:*") when a
--     socket leaves
--   pid                    -> "pid WORKER" (0 without workers)
--   echo MSG               -> "echo MSG"
--   bp                     -> "bp true" when the backplane is connected,
--     "bp false" when not, "bp nil" without one
--   bpclose                -> app.backplane:close(): "bpclose"
-- /ws runs each connection in a coroutine (a publish with workers waits
-- there for its position); /cb is a callback handler, where it cannot
-- wait: "pub T MSG" answers "pub N POSITION" as /ws does.
-- env PORT, WORKERS, HSIZE, HTTL, MAX_HISTORY_BYTES, MAX_BACKPRESSURE;
-- REDIS_URL: keep the history in Redis (app:use_backplane).
local moonsocket = require "moonsocket"

local function env_int(name)
  local v = tonumber(os.getenv(name))
  return v and math.tointeger(v)
end

local app = moonsocket.app {
  max_backpressure = env_int("MAX_BACKPRESSURE") or 1024 * 1024,
  max_history_bytes = env_int("MAX_HISTORY_BYTES"),
}
if os.getenv("REDIS_URL") then
  app:use_backplane { redis = os.getenv("REDIS_URL") }
end
app:history("h:*", { size = env_int("HSIZE"), ttl = tonumber(os.getenv("HTTL")) })
app:history("exact", { size = 3 })
app:history("f:*", { size = 1000000 })
app:history("p:*", {})
app:on_presence("p:*", function(topic, kind)
  if kind == "leave" then app:publish(topic, "left") end
end)

local function pos(p)
  return p and (p.epoch .. ":" .. p.offset) or "nil"
end

local function reply(ws, ...)
  local parts = table.pack(...)
  for i = 1, parts.n do parts[i] = tostring(parts[i]) end
  ws:send(table.concat(parts, " "))
end

local flood, last
local farewell = setmetatable({}, { __mode = "k" })  -- ws -> topic

local function command(ws, msg)
  local cmd, topic, rest = msg:match("^(%S+) ?(%S*) ?(.*)$")
  if cmd == "sub" then
    reply(ws, "sub", topic, ws:subscribe(topic))
  elseif cmd == "since" then
    local ok, info, code = ws:subscribe(topic, { since = rest ~= "" and
                                                   rest or nil })
    if ok == nil then return reply(ws, "since nil", info, code) end
    reply(ws, "since", ok, info.recovered, pos(info.position))
  elseif cmd == "ready" then
    local raise = rest == "raise"
    ws:subscribe(topic, { since = rest ~= "" and not raise and rest or nil,
                          ready = function(sock, ok, info, code)
      if raise then error("ready raised") end
      if ok == nil then return reply(sock, "ready nil", info, code) end
      reply(sock, "ready", ok, info.recovered, pos(info.position))
    end })
  elseif cmd == "readynow" then
    local said = {}
    ws:subscribe(topic, { ready = function(...)
      local got = table.pack(select(2, ...))
      for i = 1, got.n do got[i] = tostring(got[i]) end
      said[#said + 1] = "ready " .. table.concat(got, " ")
    end })
    said[#said + 1] = "returned"
    reply(ws, "readynow", table.concat(said, ","))
  elseif cmd == "readybad" then
    local _, err = pcall(function()
      return ws:subscribe(topic, { ready = 1 })
    end)
    reply(ws, "readybad", (tostring(err):gsub("^[^:]*:%d+: ", "")))
  elseif cmd == "pub" or cmd == "pubbin" then
    local n, p, code = app:publish(topic, rest, cmd == "pubbin" and "binary"
                                   or nil)
    if n == nil then return reply(ws, "pub nil", p, code) end
    reply(ws, "pub", n, pos(p))
  elseif cmd == "wspub" then
    local n, p = ws:publish(topic, rest)
    reply(ws, "wspub", n, pos(p))
  elseif cmd == "plain" then
    reply(ws, "plain", app:publish(topic, rest))
  elseif cmd == "burst" then
    local p
    for i = 1, tonumber(rest) do _, p = app:publish(topic, "b" .. i) end
    reply(ws, "burst", pos(p))
  elseif cmd == "start" then
    local n, i = tonumber(rest), 0
    flood = moonsocket.every(0.001, function()
      for _ = 1, n do
        i = i + 1
        _, last = app:publish(topic, "f" .. i)
      end
    end)
    reply(ws, "started")
  elseif cmd == "stop" then
    flood:cancel()
    reply(ws, "stopped", pos(last))
  elseif cmd == "read" then
    local since, limit, reverse = rest:match("^(%S*) ?(%d*) ?(%a*)$")
    local list, p, code = app:history_read(topic, {
      since = since ~= "" and since ~= "-" and since or nil,
      limit = tonumber(limit), reverse = reverse == "reverse" })
    if not list then return reply(ws, "read nil", p, code) end
    local offs = {}
    for i, m in ipairs(list) do offs[i] = m.offset end
    reply(ws, "read", table.concat(offs, ","), pos(p))
  elseif cmd == "data" then
    local m = app:history_read(topic, { since = rest, limit = 1 })[1]
    reply(ws, "data", m.kind, m.data)
  elseif cmd == "fill" then
    farewell[ws] = topic
    ws:send(string.rep("x", tonumber(rest)))
    app:publish("filled", "filled")
  elseif cmd == "psub" then
    reply(ws, "psub", topic, ws:subscribe(topic, { presence = {} }))
  elseif cmd == "pid" then
    reply(ws, "pid", moonsocket.worker() or 0)
  elseif cmd == "echo" then
    reply(ws, "echo", topic)
  elseif cmd == "bpclose" then
    app.backplane:close()
    reply(ws, "bpclose")
  elseif cmd == "bp" then
    reply(ws, "bp", app.backplane and app.backplane.connected)
  end
end

app:ws("/ws", function(ws)
  while true do
    local msg = ws:receive()
    if not msg then return end
    command(ws, msg)
  end
end)

app:ws("/cb", {
  message = command,
  close = function(ws)
    if farewell[ws] then app:publish(farewell[ws], "bye") end
  end,
})

assert(app:listen { port = tonumber(os.getenv("PORT")) or 5000,
                    workers = tonumber(os.getenv("WORKERS")) })
moonsocket.run()
