-- Test app: the core's counters (spec/metrics_spec.lua).
--   /metrics                  -> the Prometheus text (moonsocket.metrics)
--   /ws: echo TEXT / binary   -> sent back as it came
--        sub T                -> "sub T"; pub T MSG -> "pub N"
--        close CODE           -> ws:close(CODE)
--        pid                  -> "pid WORKER"
--        mine                 -> "mine N": text messages this worker got
--        process              -> "process WORKER HEAP RSS FDS": its own
--        slow MS              -> "slow": after MS ms of work (CPU time)
--   /co: a coroutine handler, slow MS likewise, echo otherwise
--   /slow (max_backpressure 1024): flood N -> sends N messages of 256
--        KiB until one is dropped; the socket is then failed 1008
--        hold N               -> "hold": keeps N MiB of strings and N
--                                files open (the process figures)
--   /origin: only Origin https://ok.example (others 403)
--   /z: an echo with permessage-deflate (threshold 16 bytes)
-- env PORT, WORKERS; TLS_PORT, CERT, KEY: the app on TLS there too.
local moonsocket = require "moonsocket"

local app = moonsocket.app()
local held = {}

-- Keep the process busy for ms milliseconds of CPU time.
local function busy(ms)
  local till = os.clock() + ms / 1000
  repeat until os.clock() >= till
end
app:use(moonsocket.metrics { path = "/metrics" })

app:ws("/ws", {
  message = function(ws, msg, kind)
    local cmd, topic, rest = msg:match("^(%S+) ?(%S*) ?(.*)$")
    if kind == "binary" then
      ws:send(msg, "binary")
    elseif cmd == "sub" then
      ws:subscribe(topic)
      ws:send("sub " .. topic)
    elseif cmd == "pub" then
      ws:send("pub " .. app:publish(topic, rest))
    elseif cmd == "close" then
      ws:close(tonumber(topic))
    elseif cmd == "pid" then
      ws:send("pid " .. moonsocket.worker())
    elseif cmd == "hold" then
      for i = 1, tonumber(topic) do
        -- distinct strings, each byte written: resident, not shared
        held[#held + 1] = string.rep(string.char(64 + i % 32), 1 << 20)
        held[#held + 1] = assert(io.open("/dev/null"))
      end
      ws:send("hold")
    elseif cmd == "process" then
      local w = moonsocket.worker()
      local mine = moonsocket.metrics.collect(w)
      ws:send(("process %d %d %d %d"):format(w, mine.lua_heap_bytes,
              mine.resident_bytes, mine.open_fds))
    elseif cmd == "slow" then
      busy(tonumber(topic))
      ws:send("slow")
    elseif cmd == "mine" then
      local mine = moonsocket.metrics.collect(moonsocket.worker())
      ws:send("mine " .. mine.messages_received.text)
    else
      ws:send(msg)
    end
  end,
})

local big = string.rep("x", 256 * 1024)
app:ws("/slow", {
  message = function(ws, msg)
    local n = tonumber(msg:match("^flood (%d+)$"))
    for _ = 1, n do
      local ok = ws:send(big)
      if not ok then break end
    end
  end,
}, { max_backpressure = 1024 })

app:ws("/co", function(ws)
  while true do
    local msg = ws:receive()
    if not msg then return end
    local ms = msg:match("^slow (%d+)$")
    if ms then busy(tonumber(ms)) end
    ws:send(ms and "slow" or msg)
  end
end)

app:ws("/origin", { message = function() end },
       { allowed_origins = { "https://ok.example" } })

app:ws("/z", { message = function(ws, msg, kind) ws:send(msg, kind) end },
       { compression = { threshold = 16 } })

assert(app:listen { port = tonumber(os.getenv("PORT")) or 0,
                    workers = tonumber(os.getenv("WORKERS")) })
if os.getenv("TLS_PORT") then
  assert(app:listen { port = tonumber(os.getenv("TLS_PORT")),
                      tls = { cert = os.getenv("CERT"),
                              key = os.getenv("KEY") } })
end
moonsocket.run()
