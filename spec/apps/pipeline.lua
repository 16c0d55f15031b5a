-- The app of spec/pipeline_spec.lua: middleware and upgrade hooks that
-- wait before they answer.
local moonsocket = require "moonsocket"

local app = moonsocket.app {
  log_level = "debug",
  request_timeout = tonumber(os.getenv("REQUEST_TIMEOUT")) or 30,
  max_body_size = 100,
}

app:use(function(req, next)
  local wait = tonumber(req.path:match("^/sleep/([%d.]+)"))
  if wait then
    moonsocket.sleep(wait)
    return 200, { ["Content-Type"] = "text/plain" }, "slept " .. wait .. "\n"
  end
  if req.path == "/raise" then
    moonsocket.sleep(0.01)
    error("raised after a wait")
  end
  if req.path == "/never" then
    moonsocket.sleep(3600)
  end
  if req.path == "/args" then
    local names = {}
    for name, value in pairs(req.args) do
      names[#names + 1] = name .. "=" .. (type(value) == "table"
        and table.concat(value, ",") or tostring(value))
    end
    table.sort(names)
    return 200, {}, table.concat(names, "&") .. "\n"
  end
  return next()
end)

-- req.headers is made when first read: of a request kept after its
-- answer too (the read buffer holds other bytes by then)
local kept
app:use(function(req, next)
  if req.path == "/keep" then
    kept = req
    return 200, {}, "kept\n"
  end
  if req.path == "/kept" then
    return 200, {}, kept.headers["x-who"] .. " " .. kept.headers.host
      .. " " .. tostring(rawget(kept, "headers") ~= nil) .. "\n"
  end
  return next()
end)

app:use(function(req, next)
  if req.path == "/fast" then return 200, {}, "fast\n" end
  return next()
end)

app:ws("/ws", require "moonsocket.handlers.echo", {
  upgrade = function(req)
    moonsocket.sleep(0.05)
    return { who = req.query }
  end,
  subprotocols = { "a", "b" },
  select_subprotocol = function(offered)
    moonsocket.sleep(0.02)
    return offered[#offered]
  end,
})

app:ws("/later", {
  open = function(ws)
    ws:send("opened " .. ws.data.who .. " " .. tostring(ws.protocol))
  end,
}, {
  upgrade = function(req)
    moonsocket.sleep(0.05)
    return { who = req.headers["x-who"] or "?" }
  end,
})

assert(app:listen { host = "127.0.0.1", port = tonumber(os.getenv("PORT")) })
moonsocket.run()
