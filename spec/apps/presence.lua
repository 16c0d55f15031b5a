-- Test app: presence, driven by the clients' text messages at /ws.
--   join T NAME        -> ws:subscribe(T, { presence = { name = NAME,
--                         worker = W } }): "join OK"
--   joinwith T         -> ws:subscribe(T, { presence = a nested table }):
--                         "join OK"
--   joinnum T N        -> ws:subscribe(T, { presence = { n = tonumber(N) } }):
--                         "join OK"
--   bad T WHAT         -> ws:subscribe with a bad presence: "bad ERROR"
--   leave T            -> ws:unsubscribe(T): "leave OK"
--   who T              -> app:presence(T): "who NAME@W,NAME@W" sorted
--   info T             -> the one member's info, serialised: "info ..."
--   count T            -> app:presence_count(T): "count N"
--   cost T count|list  -> whether 100 calls of app:presence_count(T)
--                         (count) or app:presence(T) (list) made Lua
--                         allocate: "cost none" or "cost alloc"
--   events             -> what app:on_presence("room:*") saw here, in
--                         order: "events KIND:TOPIC:NAME,..." (then cleared)
--   pid                -> "pid WORKER" (0 without workers)
--   die                -> this worker exits with status 3
--   bp                 -> "bp true" when the backplane is connected
--   bpclose            -> app.backplane:close(): "bpclose"
--   closeonleave       -> the next leave's on_presence closes the
--                         backplane: "closeonleave"
-- env PORT, WORKERS; REDIS_URL: a backplane to that Redis (PRESENCE_TTL:
-- its presence_ttl); LOG_EVENTS: each event also written to stdout as
-- "presence KIND:TOPIC:NAME".
local moonsocket = require "moonsocket"

local app = moonsocket.app {}
if os.getenv("REDIS_URL") then
  app:use_backplane { redis = os.getenv("REDIS_URL"),
                      presence_ttl = tonumber(os.getenv("PRESENCE_TTL")) }
end
local events = {}
local close_on_leave = false

app:on_presence("room:*", function(topic, kind, info)
  local event = kind .. ":" .. topic .. ":" .. tostring(info.name)
  events[#events + 1] = event
  if kind == "leave" and close_on_leave then
    close_on_leave = false
    app.backplane:close()
  end
  if os.getenv("LOG_EVENTS") then
    io.stdout:write("presence ", event, "\n")
    io.stdout:flush()
  end
end)

local function serialise(v)
  if type(v) ~= "table" then
    return tostring(v) .. ":" .. (math.type(v) or type(v))
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = tostring(k) .. "=" .. serialise(v[k])
  end
  return "{" .. table.concat(parts, ";") .. "}"
end

local function command(ws, msg)
  local cmd, topic, rest = msg:match("^(%S+) ?(%S*) ?(.*)$")
  local worker = moonsocket.worker() or 0
  if cmd == "join" then
    ws:send("join " .. tostring(ws:subscribe(topic, {
      presence = { name = rest, worker = worker } })))
  elseif cmd == "joinwith" then
    ws:send("join " .. tostring(ws:subscribe(topic, { presence = {
      name = "n", [1] = "first", n = 1.5, yes = true, no = false,
      deep = { list = { 1, 2, 3 } } } })))
  elseif cmd == "joinnum" then
    ws:send("join " .. tostring(ws:subscribe(topic, {
      presence = { n = tonumber(rest) } })))
  elseif cmd == "bad" then
    local bad = { ["string"] = "x", fn = { f = print },
                  big = { s = ("x"):rep(20000) } }
    local ok, err = pcall(function()
      return ws:subscribe(topic, { presence = bad[rest] })
    end)
    ws:send("bad " .. tostring(ok) .. " " ..
            tostring(err):gsub("^[^:]*:%d+: ", ""))
  elseif cmd == "leave" then
    ws:send("leave " .. tostring(ws:unsubscribe(topic)))
  elseif cmd == "who" then
    local names = {}
    for i, info in ipairs(app:presence(topic)) do
      names[i] = info.name .. "@" .. info.worker
    end
    table.sort(names)
    ws:send("who " .. table.concat(names, ","))
  elseif cmd == "info" then
    ws:send("info " .. serialise(app:presence(topic)[1]))
  elseif cmd == "count" then
    ws:send("count " .. app:presence_count(topic))
  elseif cmd == "cost" then
    local call = rest == "count" and app.presence_count or app.presence
    local grew
    for _ = 1, 2 do                   -- the first: the stack's growth
      collectgarbage("stop")
      local before = collectgarbage("count")
      for _ = 1, 100 do call(app, topic) end
      grew = collectgarbage("count") > before
      collectgarbage("restart")
    end
    ws:send("cost " .. (grew and "alloc" or "none"))
  elseif cmd == "events" then
    ws:send("events " .. table.concat(events, ","))
    events = {}
  elseif cmd == "pid" then
    ws:send("pid " .. worker)
  elseif cmd == "bp" then
    ws:send("bp " .. tostring(app.backplane and app.backplane.connected))
  elseif cmd == "bpclose" then
    app.backplane:close()
    ws:send("bpclose")
  elseif cmd == "closeonleave" then
    close_on_leave = true
    ws:send("closeonleave")
  elseif cmd == "die" then
    os.exit(3)
  end
end

app:ws("/ws", function(ws)
  while true do
    local msg = ws:receive()
    if not msg then return end
    command(ws, msg)
  end
end)

assert(app:listen { port = tonumber(os.getenv("PORT")) or 5000,
                    workers = tonumber(os.getenv("WORKERS")) })
moonsocket.run()
